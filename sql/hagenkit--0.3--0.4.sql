-- hagenkit upgrade 0.3 -> 0.4.  Every change to src/sql/ after 0.3 is
-- repeated here, so that ALTER EXTENSION hagenkit UPDATE gives exactly the
-- catalog of a fresh install (test/t/006_upgrade.pl compares them).
\echo Use "ALTER EXTENSION hagenkit UPDATE TO '0.4'" to load this file. \quit

-- Effects are built by one constructor with named timeout classes, and a
-- job's lane follows its step (src/sql/25_effects.sql).
-- The time limit of one HTTP request of a class, in milliseconds:
--   status   30 s   a status poll, a cancel, a small control request
--   request  60 s   a submit, a result, an S3 create / head / list / abort
--   batch    2 min  an S3 DeleteObjects of up to 1000 keys
--   image    2 min  an image of up to 10 MB, either way
--   media   10 min  a video or music file, either way; a multipart completion
--   part    2 min + 10 ms per KB of the body (at least 100 KB/s): a part
CREATE FUNCTION hagen._timeout_ms(class text, body_bytes bigint DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	CASE class
	WHEN 'status' THEN RETURN 30000;
	WHEN 'request' THEN RETURN 60000;
	WHEN 'batch', 'image' THEN RETURN 120000;
	WHEN 'media' THEN RETURN 600000;
	WHEN 'part' THEN RETURN 120000 + coalesce(body_bytes, 0) / 100;
	ELSE
		RAISE EXCEPTION 'unknown timeout class "%"', class
			USING HINT = 'Use status, request, batch, image, media or part.';
	END CASE;
END;
$$;

-- An HTTP effect: method, URL, the credentials the executor adds at send
-- time (none, fal, xai, s3), a timeout class, and the other keys of the
-- effect (headers, body / body_text / body_file, save_to, guard, ...).
CREATE FUNCTION hagen._http(method text, url text, auth text DEFAULT 'none',
							timeout text DEFAULT 'request', extra jsonb DEFAULT '{}')
	RETURNS jsonb LANGUAGE sql IMMUTABLE
	RETURN jsonb_build_object('type', 'http', 'method', method, 'url', url, 'auth', auth,
		'timeout_ms', hagen._timeout_ms(timeout, (extra ->> 'body_length')::bigint))
		|| coalesce(extra, '{}');

-- An effect with nothing to do but come back at once (a job that only
-- needs to look at the database again).
CREATE FUNCTION hagen._noop(reason text) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN jsonb_build_object('type', 'noop', 'reason', reason);

-- Which workers carry out a step of a job: the compile workers run
-- hagen-compile ("compile" lane), the dispatcher everything else ("http").
-- A job changes lanes as it moves from step to step.
CREATE FUNCTION hagen._step_lane(kind text, step text) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN kind = 'compile' AND step = 'compile' THEN 'compile' ELSE 'http' END;

-- Puts a job in the queue unless an equivalent live job exists; returns its id or NULL.
-- Its lane is the one its first step runs on unless given.
CREATE OR REPLACE FUNCTION hagen._enqueue(project uuid, clip uuid, kind text, provider text,
							   step text, state jsonb, lane text DEFAULT NULL,
							   time_limit interval DEFAULT NULL)
	RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	new_id bigint;
BEGIN
	INSERT INTO hagen.job (project_id, clip_id, kind, lane, provider, step, state, deadline_at)
	VALUES (project, clip, kind, coalesce(lane, hagen._step_lane(kind, step)), provider, step,
			state, now() + time_limit)
	ON CONFLICT DO NOTHING
	RETURNING id INTO new_id;
	IF new_id IS NOT NULL THEN
		PERFORM hagen._log(new_id, project, 'info', format('%s job queued', kind),
						   jsonb_build_object('step', step, 'clip_id', clip));
	END IF;
	RETURN new_id;
END;
$$;

-- Applies a decision to a job: advance to a step, retry the step after a
-- back-off, fail, or succeed.  Logs what it does.
CREATE OR REPLACE FUNCTION hagen._apply(j hagen.job, decision jsonb, outcome jsonb DEFAULT NULL)
	RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	action text := decision ->> 'action';
	err text := decision ->> 'error';
	delay interval;
	retry_after interval;
	new_state jsonb := j.state || coalesce(decision -> 'state', '{}');
	req text := coalesce(decision ->> 'request_id', j.request_id);
	summary jsonb;
BEGIN
	summary := jsonb_strip_nulls(jsonb_build_object('step', j.step, 'attempt', j.attempts,
		'http_status', outcome -> 'status', 'transport_error', outcome -> 'error',
		'elapsed_ms', outcome -> 'elapsed_ms'));

	IF action = 'retry' AND j.attempts >= coalesce((decision ->> 'max_attempts')::integer,
													hagen._max_attempts()) THEN
		action := 'fail';
		err := format('gave up on step %s after %s attempts: %s', j.step, j.attempts, err);
	END IF;

	IF decision ? 'log' THEN
		PERFORM hagen._log(j.id, j.project_id, 'info', decision ->> 'log', summary);
	END IF;

	CASE action
	WHEN 'advance' THEN
		delay := coalesce(make_interval(secs => (decision ->> 'delay_ms')::float8 / 1000), '0');
		UPDATE hagen.job
		SET status = 'queued', step = coalesce(decision ->> 'step', j.step), state = new_state,
			lane = hagen._step_lane(j.kind, coalesce(decision ->> 'step', j.step)),
			request_id = req, attempts = CASE WHEN decision ->> 'step' = j.step
											  AND (decision ->> 'keep_attempts')::boolean
											  THEN attempts ELSE 0 END,
			run_at = now() + delay, lease_token = NULL, lease_owner = NULL,
			lease_expires_at = NULL, last_error = NULL,
			submit_unconfirmed = coalesce((decision ->> 'unconfirmed')::boolean, false)
		WHERE id = j.id;
		IF decision ->> 'step' IS DISTINCT FROM j.step THEN
			PERFORM hagen._log(j.id, j.project_id, 'info',
				format('step %s done; next: %s', j.step, decision ->> 'step'), summary);
		END IF;
		IF (decision ->> 'schedule_parts')::boolean THEN
			PERFORM hagen._upload_schedule(j.id);
		END IF;
		IF j.kind IN ('clip', 'transition') AND (decision ->> 'step' IS DISTINCT FROM j.step
			OR new_state ->> 'provider_status' IS DISTINCT FROM j.state ->> 'provider_status'
			OR new_state ->> 'provider_progress' IS DISTINCT FROM j.state ->> 'provider_progress') THEN
			PERFORM hagen._advance_project(j.project_id);
		END IF;
	WHEN 'retry' THEN
		delay := hagen._backoff(j.attempts);
		retry_after := make_interval(secs => (decision ->> 'retry_after_ms')::float8 / 1000);
		IF retry_after IS NOT NULL AND retry_after > delay THEN
			delay := least(retry_after, interval '1 hour');
		END IF;
		UPDATE hagen.job
		SET status = 'queued', state = new_state, request_id = req, run_at = now() + delay,
			lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, last_error = err
		WHERE id = j.id;
		PERFORM hagen._log(j.id, j.project_id, 'warning',
			format('step %s failed (attempt %s), retrying in %s ms: %s', j.step, j.attempts,
				   round(extract(epoch FROM delay) * 1000), err),
			summary || jsonb_build_object('retry_in_ms', round(extract(epoch FROM delay) * 1000)));
	WHEN 'fail' THEN
		UPDATE hagen.job
		SET status = 'failed', state = new_state, request_id = req, last_error = err,
			submit_unconfirmed = coalesce((decision ->> 'unconfirmed')::boolean, submit_unconfirmed),
			lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, finished_at = now()
		WHERE id = j.id
		RETURNING * INTO j;
		PERFORM hagen._log(j.id, j.project_id, 'error', err, summary);
		PERFORM hagen._job_finished(j);
	WHEN 'succeed' THEN
		UPDATE hagen.job
		SET status = 'succeeded', state = new_state, request_id = req, last_error = NULL,
			cost_cents = coalesce((decision ->> 'cost_cents')::integer, cost_cents),
			lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, finished_at = now()
		WHERE id = j.id
		RETURNING * INTO j;
		PERFORM hagen._log(j.id, j.project_id, 'info', format('%s job succeeded', j.kind), summary);
		PERFORM hagen._job_finished(j);
	ELSE
		RAISE EXCEPTION 'unknown job decision "%"', action;
	END CASE;
END;
$$;

-- The effect of a storing step of a job.
CREATE OR REPLACE FUNCTION hagen._upload_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	url text := hagen._s3_url(j.state ->> 'key');
	ctype text := coalesce(j.state ->> 'content_type', 'video/mp4');
BEGIN
	CASE j.step
	WHEN 'store' THEN
		RETURN hagen._http('PUT', url, 's3', 'media', jsonb_build_object(
			'headers', jsonb_build_object('content-type', ctype), 'body_file', j.state ->> 'file'));
	WHEN 'upload_create' THEN
		RETURN hagen._http('POST', url || '?uploads', 's3', 'request',
			jsonb_build_object('headers', jsonb_build_object('content-type', ctype)));
	WHEN 'upload_parts' THEN
		RETURN hagen._noop('waiting for the parts of a multipart upload');
	WHEN 'upload_complete' THEN
		RETURN hagen._http('POST', url || '?' || hagen._upload_query(j.state ->> 'upload_id'), 's3',
			'media', jsonb_build_object('headers', '{"content-type": "application/xml"}'::jsonb,
				'body_text', hagen._complete_xml(j.state -> 'parts', (j.state ->> 'part_count')::integer)));
	WHEN 'upload_check' THEN
		RETURN hagen._http('HEAD', url, 's3', 'request');
	END CASE;
	RAISE EXCEPTION 'unknown storing step "%"', j.step;
END;
$$;

-- The effect of a part: its byte range of the file, streamed.
CREATE OR REPLACE FUNCTION hagen._upload_part_effect(j hagen.job) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN hagen._http('PUT', hagen._s3_url(j.state ->> 'key') || '?partNumber=' || (j.state ->> 'part')
			|| '&' || hagen._upload_query(j.state ->> 'upload_id'), 's3', 'part',
		jsonb_build_object('body_file', j.state ->> 'file', 'body_offset', j.state -> 'offset',
						   'body_length', j.state -> 'length'));

-- The abort of a multipart upload (a cancel job of provider "s3").
CREATE OR REPLACE FUNCTION hagen._upload_abort_effect(key text, upload_id text) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN hagen._http('DELETE', hagen._s3_url(key) || '?' || hagen._upload_query(upload_id), 's3');

-- The effect of the current step of a purge job.
CREATE OR REPLACE FUNCTION hagen._purge_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	body text;
BEGIN
	CASE j.step
	WHEN 'abort' THEN
		RETURN hagen._upload_abort_effect(j.state -> 'aborts' -> 0 ->> 'key',
										  j.state -> 'aborts' -> 0 ->> 'upload_id');
	WHEN 'list' THEN
		RETURN hagen._http('GET', hagen._s3_bucket_url() || '?list-type=2&max-keys=1000&prefix='
				|| hagen._uri_encode(j.state ->> 'prefix', false)
				|| coalesce('&continuation-token=' || hagen._uri_encode(j.state ->> 'token', false), ''),
			's3', 'request');
	WHEN 'delete' THEN
		body := hagen._delete_xml(j.state -> 'keys');
		RETURN hagen._http('POST', hagen._s3_bucket_url() || '?delete', 's3', 'batch',
			jsonb_build_object('headers', jsonb_build_object('content-type', 'application/xml',
				'content-md5', encode(decode(md5(convert_to(body, 'UTF8')), 'hex'), 'base64')),
				'body_text', body));
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a purge job', j.step;
END;
$$;

-- The effect of the current step of a clip or transition job.
CREATE OR REPLACE FUNCTION hagen._generation_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.step
	WHEN 'image_fetch', 'image_initiate', 'image_put', 'submit', 'poll', 'result' THEN
		CASE j.provider
		WHEN 'fal' THEN RETURN hagen._fal_effect(j);
		WHEN 'xai' THEN RETURN hagen._xai_effect(j);
		END CASE;
		RAISE EXCEPTION 'unknown provider "%"', j.provider;
	WHEN 'download' THEN
		RETURN hagen._http('GET', j.state ->> 'video_url', 'none', 'media',
			jsonb_build_object('guard', true, 'follow_redirects', true, 'save_to', j.state ->> 'file',
							   'max_bytes', hagen._max_download_bytes()));
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		RETURN hagen._upload_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a % job', j.step, j.kind;
END;
$$;

-- A cancel job sends the provider's cancel request for a request already made.
CREATE OR REPLACE FUNCTION hagen._provider_cancel_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.provider
	WHEN 'fal' THEN
		RETURN hagen._http('PUT', coalesce(j.state ->> 'cancel_url',
				hagen._fal_request_url(j.state ->> 'model', j.state ->> 'request_id') || '/cancel'),
			'fal', 'status', '{"headers": {"accept": "application/json"}}');
	WHEN 'xai' THEN
		RETURN hagen._xai_cancel_effect(j);
	WHEN 's3' THEN
		RETURN hagen._upload_abort_effect(j.state ->> 'key', j.state ->> 'upload_id');
	END CASE;
	RAISE EXCEPTION 'unknown provider "%"', j.provider;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._fal_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := hagen._fal_request_url(j.state ->> 'model', coalesce(j.request_id, ''));
	url text;
BEGIN
	IF j.step LIKE 'image\_%' THEN
		RETURN hagen._fal_upload_effect(j);
	END IF;
	CASE j.step
	WHEN 'submit' THEN
		RETURN hagen._http('POST', rtrim(hagen._setting('hagen.fal_queue_url', 'https://queue.fal.run'), '/')
				|| '/' || (j.state ->> 'model'), 'fal', 'request',
			jsonb_build_object('headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
							   'body', hagen._fal_input(j.state)));
	WHEN 'poll' THEN
		url := coalesce(j.state ->> 'status_url', base || '/status');
		RETURN hagen._http('GET', url || CASE WHEN url ~ '\?' THEN '&' ELSE '?' END || 'logs=0',
			'fal', 'status', '{"headers": {"accept": "application/json"}}');
	WHEN 'result' THEN
		RETURN hagen._http('GET', coalesce(j.state ->> 'response_url', base), 'fal', 'request',
			'{"headers": {"accept": "application/json"}}');
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai step "%"', j.step;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._xai_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := rtrim(hagen._setting('hagen.xai_url', 'https://api.x.ai/v1'), '/');
BEGIN
	CASE j.step
	WHEN 'submit' THEN
		RETURN hagen._http('POST', base || '/videos/generations', 'xai', 'request', jsonb_build_object(
			'headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
			'body', jsonb_build_object('model', j.state ->> 'model', 'prompt', j.state ->> 'prompt',
				'image', jsonb_build_object('url', j.state ->> 'start_image'),
				'duration', (j.state ->> 'duration')::integer,
				'aspect_ratio', j.state ->> 'aspect_ratio',
				'resolution', hagen._setting('hagen.xai_resolution', '720p'))));
	WHEN 'poll', 'result' THEN
		RETURN hagen._http('GET', base || '/videos/' || hagen._uri_encode(j.request_id, false), 'xai',
			'status', '{"headers": {"accept": "application/json"}}');
	END CASE;
	RAISE EXCEPTION 'unknown xAI step "%"', j.step;
END;
$$;

-- xAI offers no way to cancel a request: the cancel job only records that.
CREATE OR REPLACE FUNCTION hagen._xai_cancel_effect(j hagen.job) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN hagen._noop('xAI has no cancel endpoint');

CREATE OR REPLACE FUNCTION hagen._fal_upload_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	img jsonb := j.state -> 'images' -> i;
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		RETURN hagen._http('GET', img ->> 'url', 'none', 'image', jsonb_build_object(
			'guard', true, 'follow_redirects', true,
			'save_to', hagen._work_file(j.project_id, format('images/%s_%s', j.id, i)),
			'max_bytes', 10 * 1024 * 1024));
	WHEN 'image_initiate' THEN
		RETURN hagen._http('POST', rtrim(hagen._setting('hagen.fal_rest_url', 'https://rest.fal.ai'), '/')
				|| '/storage/upload/initiate?storage_type=fal-cdn-v3', 'fal', 'status', jsonb_build_object(
			'headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
			'body', jsonb_build_object('content_type', img ->> 'content_type',
									   'file_name', img ->> 'file_name')));
	WHEN 'image_put' THEN
		RETURN hagen._http('PUT', img ->> 'upload_url', 'none', 'image', jsonb_build_object(
			'guard', true, 'body_file', img ->> 'file',
			'headers', jsonb_build_object('content-type', img ->> 'content_type')));
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai upload step "%"', j.step;
END;
$$;

-- The compile as a job with steps (fetch -> compile -> store), fetch and
-- cleanup jobs, the work directory's upkeep (src/sql/60_compile.sql,
-- 65_workdir.sql).
ALTER TABLE hagen.job DROP CONSTRAINT job_kind_check,
	ADD CONSTRAINT job_kind_check CHECK (kind IN ('clip', 'transition', 'compile', 'cancel',
												  'upload_part', 'purge', 'fetch', 'cleanup'));
ALTER TABLE hagen.job DROP CONSTRAINT job_project_check,
	ADD CONSTRAINT job_project_check CHECK (project_id IS NOT NULL OR kind IN ('purge', 'cleanup'));
-- One live removal per directory of the work directory.
CREATE UNIQUE INDEX job_one_live_cleanup ON hagen.job ((state ->> 'dir'))
	WHERE kind = 'cleanup' AND status IN ('queued', 'running');
-- The effect the current step of a job needs, by job kind.
CREATE OR REPLACE FUNCTION hagen._effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.kind
	WHEN 'clip', 'transition' THEN RETURN hagen._generation_effect(j);
	WHEN 'compile' THEN RETURN hagen._compile_effect(j);
	WHEN 'chunk' THEN RETURN hagen._chunk_effect(j);
	WHEN 'cancel' THEN RETURN hagen._provider_cancel_effect(j);
	WHEN 'upload_part' THEN RETURN hagen._upload_part_effect(j);
	WHEN 'purge' THEN RETURN hagen._purge_effect(j);
	WHEN 'fetch' THEN RETURN hagen._fetch_effect(j);
	WHEN 'cleanup' THEN RETURN hagen._cleanup_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown job kind "%"', j.kind;
END;
$$;

-- How to read the outcome of the current step of a job, by job kind.
CREATE OR REPLACE FUNCTION hagen._interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.kind
	WHEN 'clip', 'transition' THEN RETURN hagen._generation_interpret(j, o);
	WHEN 'compile' THEN RETURN hagen._compile_interpret(j, o);
	WHEN 'chunk' THEN RETURN hagen._chunk_interpret(j, o);
	WHEN 'cancel' THEN RETURN hagen._provider_cancel_interpret(j, o);
	WHEN 'upload_part' THEN RETURN hagen._upload_part_interpret(j, o);
	WHEN 'purge' THEN RETURN hagen._purge_interpret(j, o);
	WHEN 'fetch' THEN RETURN hagen._fetch_interpret(j, o);
	WHEN 'cleanup' THEN RETURN hagen._cleanup_interpret(j, o);
	END CASE;
	RAISE EXCEPTION 'unknown job kind "%"', j.kind;
END;
$$;

-- Lets a worker that is still busy with a long effect (a compile) keep its
-- lease and report how far it has come ({"fraction": 0..1}; SQL alone turns
-- that into the project's percent).  Returns false when the lease was lost
-- or the job canceled.
CREATE OR REPLACE FUNCTION hagen.heartbeat(job_id bigint, token bigint, progress jsonb DEFAULT NULL,
								extend interval DEFAULT '2 minutes')
	RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
BEGIN
	SELECT * INTO j FROM hagen.job WHERE id = heartbeat.job_id FOR UPDATE;
	IF NOT FOUND OR j.status <> 'running' OR j.lease_token IS DISTINCT FROM heartbeat.token THEN
		RETURN false;
	END IF;
	UPDATE hagen.job SET lease_expires_at = greatest(lease_expires_at, now() + extend)
	WHERE id = j.id;
	IF progress IS NOT NULL AND j.kind IN ('compile', 'chunk') THEN
		PERFORM hagen._compile_progress(j, j.step, (progress ->> 'fraction')::numeric);
	END IF;
	-- A project canceled while this job's row was locked (cancel_video
	-- skips those) stops its job here too.
	RETURN NOT j.cancel_requested
		AND NOT EXISTS (SELECT 1 FROM hagen.video_project v WHERE v.id = j.project_id
						AND v.status = 'canceled');
END;
$$;

-- Moves a generating project on: counts and progress, and once no
-- generation job is live, queues the compile (or fails the project when no
-- clip completed).
CREATE OR REPLACE FUNCTION hagen._advance_project(project uuid) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
	n_done integer;
	n_all integer;
	live boolean;
	fraction numeric;
	errors text;
BEGIN
	SELECT * INTO p FROM hagen.video_project WHERE id = project FOR UPDATE;
	IF NOT FOUND OR p.status <> 'generating' THEN
		RETURN;
	END IF;
	UPDATE hagen.video_project v
	SET clip_count = s.n, completed_clips = s.ok, failed_clips = s.bad,
		actual_cost_cents = s.cost
	FROM (SELECT count(*) AS n, count(*) FILTER (WHERE status = 'completed') AS ok,
				 count(*) FILTER (WHERE status IN ('failed', 'canceled')) AS bad,
				 coalesce(sum(cost_cents), 0) AS cost
		  FROM hagen.video_clip WHERE project_id = p.id) AS s
	WHERE v.id = p.id
	RETURNING v.* INTO p;

	SELECT count(*) FILTER (WHERE status NOT IN ('queued', 'running')), count(*),
		   bool_or(status IN ('queued', 'running')), avg(hagen._job_fraction(job))
	INTO n_done, n_all, live, fraction
	FROM hagen.job WHERE project_id = p.id AND kind IN ('clip', 'transition')
	  AND created_at >= p.started_at;
	IF coalesce(live, false) THEN
		PERFORM hagen._set_progress(p.id, 'generating',
			format('Generating clips (%s of %s done)', n_done, n_all), 85.0 * fraction);
		RETURN;
	END IF;

	IF p.completed_clips = 0 THEN
		SELECT string_agg(format('clip %s: %s', c.sequence_order,
								 coalesce(c.error_message, c.status)), '; ' ORDER BY c.sequence_order)
		INTO errors FROM hagen.video_clip c WHERE c.project_id = p.id;
		UPDATE hagen.video_project v
		SET status = 'failed', completed_at = now(),
			error_message = format('all %s clips failed: %s', p.clip_count, errors),
			progress = jsonb_build_object('step', 'failed', 'label', 'Failed',
				'percent', coalesce((v.progress ->> 'percent')::numeric, 0))
		WHERE v.id = p.id;
		PERFORM hagen._log(NULL, p.id, 'error', 'run failed: no clip completed');
		RETURN;
	END IF;

	UPDATE hagen.video_project v SET status = 'compiling' WHERE v.id = p.id RETURNING * INTO p;
	PERFORM hagen._compile_queue(p);
END;
$$;

-- Records the end of a job on its clip or project and moves the project on.
CREATE OR REPLACE FUNCTION hagen._job_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	st text := CASE j.status WHEN 'succeeded' THEN 'completed' ELSE j.status END;
BEGIN
	IF j.state ->> 'upload_id' IS NOT NULL AND j.kind IN ('clip', 'transition', 'compile', 'fetch', 'chunk')
	   AND j.status <> 'succeeded' AND j.state ->> 'upload_done' IS NULL THEN
		PERFORM hagen._upload_abandon(j);
	END IF;
	CASE j.kind
	WHEN 'clip' THEN
		UPDATE hagen.video_clip c
		SET status = CASE WHEN c.status = 'canceled' AND st <> 'completed' THEN c.status ELSE st END,
			clip_url = CASE WHEN st = 'completed' THEN j.state ->> 'url' ELSE c.clip_url END,
			cost_cents = c.cost_cents + j.cost_cents,
			error_message = CASE WHEN st = 'failed' THEN j.last_error ELSE NULL END
		WHERE c.id = j.clip_id;
	WHEN 'transition' THEN
		UPDATE hagen.video_clip c
		SET transition_status = CASE WHEN c.transition_status = 'canceled' AND st <> 'completed'
									 THEN c.transition_status ELSE st END,
			transition_clip_url = CASE WHEN st = 'completed' THEN j.state ->> 'url'
									   ELSE c.transition_clip_url END,
			cost_cents = c.cost_cents + j.cost_cents
		WHERE c.id = j.clip_id;
	WHEN 'compile' THEN
		PERFORM hagen._compile_finished(j);
	WHEN 'chunk' THEN
		PERFORM hagen._chunk_finished(j);
	WHEN 'upload_part' THEN
		PERFORM hagen._upload_part_finished(j);
	WHEN 'fetch' THEN
		PERFORM hagen._fetch_finished(j);
	ELSE
		NULL;
	END CASE;
	IF j.kind IN ('clip', 'transition') THEN
		PERFORM hagen._advance_project(j.project_id);
	END IF;
	PERFORM hagen._cleanup_if_settled(j.project_id);
END;
$$;

-- Starts (or resumes) a run of a locked project: queues what is missing and
-- moves it to generating.  Returns the status with the number of new jobs.
CREATE OR REPLACE FUNCTION hagen._begin_run(p hagen.video_project) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	n integer;
BEGIN
	PERFORM hagen._check_runnable(p);
	PERFORM hagen._cancel_cleanup(p.id);
	UPDATE hagen.video_project v
	SET status = 'generating', started_at = now(), completed_at = NULL, error_message = NULL,
		final_video_url = NULL, thumbnail_url = NULL, duration = NULL,
		progress = '{"step": "generating", "label": "Generating clips", "percent": 0}'
	WHERE v.id = p.id
	RETURNING * INTO p;
	n := hagen._enqueue_generation(p);
	UPDATE hagen.video_project v SET estimated_cost_cents = hagen._estimate_cents(p)
	WHERE v.id = p.id;
	PERFORM hagen._log(NULL, p.id, 'info', 'run started', jsonb_build_object('jobs', n));
	PERFORM hagen._advance_project(p.id);
	RETURN hagen.video_status(p.id) || jsonb_build_object('enqueued_jobs', n);
END;
$$;

-- A part ended: a stored part's ETag goes into its parent's state (with
-- the next part queued, or the parent woken to complete); a failed part
-- wakes the parent, which fails the upload.
CREATE OR REPLACE FUNCTION hagen._upload_part_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.job;
BEGIN
	SELECT * INTO p FROM hagen.job WHERE id = j.parent_id FOR UPDATE;
	IF NOT FOUND OR p.step <> 'upload_parts' OR p.status NOT IN ('queued', 'running')
	   OR p.state ->> 'upload_id' IS DISTINCT FROM j.state ->> 'upload_id' THEN
		RETURN;
	END IF;
	IF j.status = 'succeeded' THEN
		p.state := jsonb_set(p.state, ARRAY['parts', j.state ->> 'part'], j.state -> 'etag');
		UPDATE hagen.job SET state = p.state WHERE id = p.id;
		IF (SELECT count(*) FROM jsonb_object_keys(p.state -> 'parts'))
		   < (p.state ->> 'part_count')::integer THEN
			PERFORM hagen._upload_schedule(p.id);
			IF p.kind = 'compile' THEN
				PERFORM hagen._compile_progress(p, 'store',
					(SELECT count(*) FROM jsonb_object_keys(p.state -> 'parts'))
					/ greatest((p.state ->> 'part_count')::numeric, 1));
			ELSE
				PERFORM hagen._advance_project(p.project_id);
			END IF;
			RETURN;
		END IF;
	END IF;
	UPDATE hagen.job SET run_at = now() WHERE id = p.id AND status = 'queued';
END;
$$;

-- Deleting a project that was ever started deletes its objects and its
-- work files: the multipart uploads it left open are aborted, and the purge
-- and the cleanup wait until no request of the project can still be in
-- flight (the longest lease).
CREATE OR REPLACE FUNCTION hagen._project_deleted() RETURNS trigger
	LANGUAGE plpgsql AS $$
DECLARE
	aborts jsonb;
	after timestamptz;
BEGIN
	IF OLD.started_at IS NULL THEN
		RETURN OLD;
	END IF;
	SELECT coalesce(jsonb_agg(jsonb_build_object('key', j.state ->> 'key',
												 'upload_id', j.state ->> 'upload_id') ORDER BY j.id)
					FILTER (WHERE j.kind <> 'upload_part' AND j.state ->> 'upload_id' IS NOT NULL
							AND j.state ->> 'upload_done' IS NULL), '[]'),
		   -- A compile worker notices within seconds that its job is gone
		   -- (its heartbeat fails) and stops the helper; the dispatcher's
		   -- requests run until their lease ends.
		   max(CASE WHEN j.lane = 'compile' THEN least(j.lease_expires_at, now() + interval '10 seconds')
					ELSE j.lease_expires_at END) FILTER (WHERE j.status = 'running')
	INTO aborts, after
	FROM hagen.job j
	WHERE j.project_id = OLD.id AND j.status IN ('queued', 'running');
	PERFORM hagen._schedule_purge(OLD.workspace_id, OLD.id, aborts,
								  CASE WHEN after IS NOT NULL THEN least(after, now() + interval '1 hour') END);
	-- Its work files go too, once nothing of it can still be writing them.
	PERFORM hagen._queue_cleanup(OLD.id::text, 'the project was deleted',
								 CASE WHEN after IS NOT NULL THEN least(after, now() + interval '1 hour') END);
	RETURN OLD;
END;
$$;

-- The time limit of hagen-compile on one compile.
CREATE FUNCTION hagen._compile_timeout() RETURNS interval
	LANGUAGE sql STABLE RETURN hagen._setting_interval('hagen.compile_timeout', '30 minutes');

-- The segments of the final video in order: completed clips by
-- sequence_order, each followed by its seamless transition when that
-- completed and leads into the very next clip; anything else is a cut, and
-- a clip after a cut fades in from the segment before it when the project
-- has a crossfade.  Each segment names its work file, its storage key and
-- how it is called in messages.
CREATE OR REPLACE FUNCTION hagen._compile_segments(p hagen.video_project) RETURNS jsonb
	LANGUAGE sql STABLE AS $$
	WITH ordered AS (
		SELECT c.*, lead(c.id) OVER (ORDER BY c.sequence_order) AS next_id
		FROM hagen.video_clip c WHERE c.project_id = p.id
	), kept0 AS (
		SELECT o.*, lead(o.id) OVER (ORDER BY o.sequence_order) AS next_kept
		FROM ordered o WHERE o.status = 'completed'
	), kept AS (
		SELECT k.*, lag(k.id) OVER w IS NULL AS first,
			   coalesce(lag(k.transition_type = 'seamless' AND k.transition_status = 'completed'
							AND k.next_id IS NOT NULL AND k.next_id = k.next_kept) OVER w, false)
				   AS after_transition
		FROM kept0 k WINDOW w AS (ORDER BY k.sequence_order)
	), segs AS (
		SELECT k.sequence_order, 0 AS part, jsonb_build_object(
				'kind', 'clip', 'clip_id', k.id,
				'label', coalesce(k.room_label, k.room_type, 'clip ' || k.sequence_order),
				'key', hagen.get_video_path(p.workspace_id, p.id, k.id || '.mp4'),
				'file', hagen._work_file(p.id, k.id || '.mp4'),
				'crossfade', CASE WHEN k.first OR k.after_transition THEN 0 ELSE p.crossfade END) AS seg
		FROM kept k
		UNION ALL
		SELECT k.sequence_order, 1, jsonb_build_object(
				'kind', 'transition', 'clip_id', k.id,
				'label', 'transition after ' || coalesce(k.room_label, k.room_type, 'clip ' || k.sequence_order),
				'key', hagen.get_video_path(p.workspace_id, p.id, 'transition_' || k.id || '.mp4'),
				'file', hagen._work_file(p.id, 'transition_' || k.id || '.mp4'),
				'crossfade', 0)
		FROM kept k
		WHERE k.transition_type = 'seamless' AND k.transition_status = 'completed'
		  AND k.next_id IS NOT NULL AND k.next_id = k.next_kept
	)
	SELECT coalesce(jsonb_agg(seg ORDER BY sequence_order, part), '[]') FROM segs;
$$;

-- What a compile of the project is to make, fixed when the compile is
-- queued: the manifest hagen-compile reads (its paths relative to
-- hagen.work_dir; the output and thumbnail are added per attempt), the
-- inputs to fetch, and the storage keys of the results.
CREATE FUNCTION hagen._compile_plan(p hagen.video_project) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	segs jsonb := hagen._compile_segments(p);
	m hagen.music_track;
	music_file text;
BEGIN
	SELECT * INTO m FROM hagen.music_track WHERE id = p.music_track_id;
	IF m.id IS NOT NULL THEN
		music_file := hagen._work_file(p.id, 'music_' || m.id);
	END IF;
	RETURN jsonb_build_object(
		'manifest', jsonb_build_object(
			'segments', (SELECT jsonb_agg(jsonb_build_object('file', s ->> 'file', 'kind', s ->> 'kind',
										  'label', s ->> 'label', 'crossfade', s -> 'crossfade') ORDER BY n)
						 FROM jsonb_array_elements(segs) WITH ORDINALITY AS x(s, n)),
			'music', CASE WHEN m.id IS NOT NULL
						  THEN jsonb_build_object('file', music_file, 'volume', p.music_volume) END,
			'video_volume', p.video_volume,
			'aspect_ratio', p.aspect_ratio,
			'mode', 'auto',
			'threads', hagen._compile_threads()),
		'inputs', coalesce((SELECT jsonb_agg(jsonb_build_object('file', s ->> 'file', 'key', s ->> 'key',
								'what', format('segment %s (%s)', n, s ->> 'label')) ORDER BY n)
							FROM jsonb_array_elements(segs) WITH ORDINALITY AS x(s, n)), '[]')
				  || CASE WHEN m.id IS NOT NULL THEN jsonb_build_array(jsonb_build_object(
						'file', music_file, 'url', m.audio_url,
						'key', hagen.get_video_path(p.workspace_id, p.id, 'music_' || m.id),
						'what', format('the music track "%s"', m.name))) ELSE '[]' END,
		'final_key', hagen.get_video_path(p.workspace_id, p.id, 'final.mp4'),
		'thumbnail_key', hagen.get_video_path(p.workspace_id, p.id, 'thumbnail.jpg'));
END;
$$;

-- How long a compile job waiting for its inputs sleeps before it looks on
-- its own (its fetches wake it when they end; this only covers a wake-up
-- that was lost).
CREATE FUNCTION hagen._compile_watchdog_ms() RETURNS integer
	LANGUAGE sql IMMUTABLE RETURN 30000;

-- Queues the compile of a project whose generation has ended, with one
-- fetch job per input.  Returns the compile job's id (NULL when one is
-- live already).
CREATE FUNCTION hagen._compile_queue(p hagen.video_project) RETURNS bigint
	LANGUAGE plpgsql AS $$
DECLARE
	plan jsonb := hagen._compile_plan(p);
	compile_id bigint;
	fetches integer;
BEGIN
	compile_id := hagen._enqueue(p.id, NULL, 'compile', NULL, 'fetch', plan, NULL,
								 hagen._compile_timeout() * 2);
	IF compile_id IS NULL THEN
		RETURN NULL;
	END IF;
	-- A worker on another host reads the stored clips from the bucket
	-- itself: only what is not there yet (the music) is fetched.
	INSERT INTO hagen.job (project_id, kind, lane, step, state, deadline_at, parent_id)
	SELECT p.id, 'fetch', 'http', 'fetch', i, q.deadline_at, q.id
	FROM hagen.job q, jsonb_array_elements(plan -> 'inputs') i
	WHERE q.id = compile_id AND (i ? 'url' OR NOT hagen._compiles_elsewhere());
	GET DIAGNOSTICS fetches = ROW_COUNT;
	UPDATE hagen.job SET state = state || jsonb_build_object('fetches', fetches) WHERE id = compile_id;
	IF fetches > 0 THEN
		UPDATE hagen.job SET run_at = now() + make_interval(secs => hagen._compile_watchdog_ms() / 1000.0)
		WHERE id = compile_id;
	END IF;
	PERFORM hagen._set_progress(p.id, 'compiling', 'Gathering the clips', 85);
	RETURN compile_id;
END;
$$;

-- The effect of a fetch: a GET into the work file, unless the file is
-- there already (a clip downloaded by this run).  Stored segments come from
-- the bucket; the music from its URL, through the network guard.
CREATE FUNCTION hagen._fetch_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF j.step <> 'fetch' THEN
		RETURN hagen._upload_effect(j);
	END IF;
	RETURN CASE WHEN j.state ? 'url'
		THEN hagen._http('GET', j.state ->> 'url', 'none', 'media',
			jsonb_build_object('save_to', j.state ->> 'file', 'unless_exists', true,
							   'guard', true, 'follow_redirects', true,
							   'max_bytes', hagen._max_download_bytes()))
		ELSE hagen._http('GET', hagen._s3_url(j.state ->> 'key'), 's3', 'media',
			jsonb_build_object('save_to', j.state ->> 'file', 'unless_exists', true,
							   'max_bytes', hagen._max_download_bytes()))
		END;
END;
$$;

-- Reads the answer to a fetch.  A refusal of the guard, a file too large
-- and a 4xx are final: the project fails with them at once.
CREATE FUNCTION hagen._fetch_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	what text := j.state ->> 'what';
	src text := coalesce(j.state ->> 'url', j.state ->> 'key');
	d jsonb;
BEGIN
	IF j.step <> 'fetch' THEN
		d := hagen._upload_interpret(j, o);
		RETURN CASE WHEN d ->> 'action' = 'stored'
					THEN jsonb_strip_nulls(jsonb_build_object('action', 'succeed', 'log', d ->> 'log',
															  'state', d -> 'state'))
					ELSE d END;
	END IF;
	IF o ->> 'error_kind' = 'guard' THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('refused to fetch %s from %s: %s', what, src, o ->> 'error'));
	ELSIF o ->> 'error_kind' = 'too_large' THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('%s at %s is larger than hagen.max_download_bytes (%s bytes)', what, src,
							hagen._max_download_bytes()));
	ELSIF status BETWEEN 200 AND 299 AND o ? 'file' AND j.state ? 'url' THEN
		-- Music from elsewhere: into the bucket beside the clips.
		RETURN jsonb_build_object('action', 'advance', 'step', hagen._store_step((o ->> 'bytes')::bigint),
			'state', jsonb_build_object('bytes', (o ->> 'bytes')::bigint,
				'existing', coalesce(o -> 'existing', 'false'),
				'content_type', coalesce(nullif(split_part(o -> 'headers' ->> 'content-type', ';', 1), ''),
										 'application/octet-stream')));
	ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
		RETURN jsonb_build_object('action', 'succeed',
			'state', jsonb_build_object('bytes', o -> 'bytes', 'existing', coalesce(o -> 'existing', 'false')));
	ELSIF status BETWEEN 400 AND 499 AND status <> 429 THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('could not fetch %s from %s: HTTP %s%s', what, src, status,
							coalesce(': ' || hagen._error_text(o), '')));
	END IF;
	RETURN coalesce(hagen._transient(o, format('fetch of %s', what)),
		jsonb_build_object('action', 'fail',
			'error', format('could not fetch %s from %s: HTTP %s', what, src, status)));
END;
$$;

-- Fetches ended: each compile counts its own, and looks at once when its
-- last one ended or one failed.  (A compile fetches its inputs, and later
-- the chunks of a split re-encode.)  One UPDATE a compile for any number of
-- its fetches; the other jobs given are not fetches and are left alone.
CREATE FUNCTION hagen._fetches_finished(js hagen.job[]) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	q hagen.job;
	ok integer;
	failed boolean;
BEGIN
	FOR q IN
		SELECT * FROM hagen.job
		WHERE id IN (SELECT f.parent_id FROM unnest(js) AS f WHERE f.kind = 'fetch')
		ORDER BY id
		FOR UPDATE
	LOOP
		IF q.step NOT IN ('fetch', 'gather') OR q.status NOT IN ('queued', 'running') THEN
			CONTINUE;
		END IF;
		SELECT count(*) FILTER (WHERE f.status = 'succeeded'), bool_or(f.status <> 'succeeded')
		INTO ok, failed
		FROM unnest(js) AS f WHERE f.kind = 'fetch' AND f.parent_id = q.id;
		IF ok > 0 THEN
			q.state := q.state || jsonb_build_object('fetches', (q.state ->> 'fetches')::integer - ok);
			UPDATE hagen.job SET state = q.state WHERE id = q.id;
		END IF;
		IF failed OR (q.state ->> 'fetches')::integer <= 0 THEN
			UPDATE hagen.job SET run_at = now() WHERE id = q.id AND status = 'queued';
		END IF;
	END LOOP;
END;
$$;

-- The directory of one attempt of a compile (relative to hagen.work_dir):
-- a helper that outlives its attempt can never write into a retry's files.
CREATE FUNCTION hagen._compile_attempt_dir(j hagen.job, attempt integer) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN hagen._work_file(j.project_id, format('compile_%s_%s', j.id, attempt));

-- The effect of the current step of a compile job.
CREATE OR REPLACE FUNCTION hagen._compile_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	dir text;
	n integer := jsonb_array_length(j.state -> 'manifest' -> 'segments');
BEGIN
	CASE j.step
	WHEN 'fetch' THEN
		RETURN hagen._noop('waiting for the inputs of the compile');
	WHEN 'compile', 'join' THEN
		-- The claim this effect is for counts total_attempts up.
		dir := hagen._compile_attempt_dir(j, j.total_attempts + 1);
		RETURN hagen._compile_lane_effect(dir,
			CASE j.step WHEN 'join' THEN j.state -> 'join' -> 'manifest' ELSE j.state -> 'manifest' END
				|| jsonb_build_object('output', dir || '/final.mp4', 'thumbnail', dir || '/thumbnail.jpg'),
			CASE j.step WHEN 'join' THEN j.state -> 'join' -> 'inputs' ELSE j.state -> 'inputs' END,
			jsonb_build_array(
				jsonb_build_object('file', dir || '/thumbnail.jpg', 'key', j.state ->> 'thumbnail_key',
								   'content_type', 'image/jpeg'),
				jsonb_build_object('file', dir || '/final.mp4', 'key', j.state ->> 'final_key',
								   'content_type', 'video/mp4')));
	WHEN 'plan' THEN
		-- Only the segments are probed; nothing is written.
		dir := hagen._compile_attempt_dir(j, j.total_attempts + 1);
		RETURN hagen._compile_lane_effect(dir, j.state -> 'manifest' || '{"task": "plan"}',
			(SELECT jsonb_agg(i ORDER BY k) FROM jsonb_array_elements(j.state -> 'inputs') WITH ORDINALITY x(i, k)
			 WHERE k <= n), '[]');
	WHEN 'chunks' THEN
		RETURN hagen._noop('waiting for the chunks of the video');
	WHEN 'gather' THEN
		RETURN hagen._noop('waiting for the chunks to be fetched');
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		RETURN hagen._upload_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a compile job', j.step;
END;
$$;

-- The project's progress while it compiles: gathering 85 %, FFmpeg 85 to
-- 97 % by the fraction hagen-compile reports, storing 97 to 99 %.
CREATE FUNCTION hagen._compile_progress(j hagen.job, step text, fraction numeric DEFAULT 0)
	RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	f numeric := least(greatest(coalesce(fraction, 0), 0), 1);
BEGIN
	IF j.kind = 'chunk' THEN
		UPDATE hagen.job SET state = state || jsonb_build_object('fraction', f) WHERE id = j.id;
		PERFORM hagen._chunks_progress(j.parent_id);
		RETURN;
	END IF;
	PERFORM 1 FROM hagen.video_project WHERE id = j.project_id FOR UPDATE SKIP LOCKED;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	PERFORM hagen._set_progress(j.project_id, 'compiling',
		CASE WHEN step = 'fetch' THEN 'Gathering the clips'
			 WHEN step IN ('compile', 'plan') THEN 'Compiling the video'
			 WHEN step IN ('gather', 'join') THEN 'Joining the parts of the video'
			 ELSE 'Uploading the video' END,
		CASE WHEN step IN ('fetch', 'plan') THEN 85
			 WHEN step = 'compile' THEN 85 + 12 * f
			 WHEN step IN ('gather', 'join') THEN 95 + 2 * f
			 ELSE 97 + 2 * f END);
END;
$$;

-- Reads the outcome of the current step of a compile job.
CREATE OR REPLACE FUNCTION hagen._compile_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	r jsonb := o -> 'result';
	bad hagen.job;
	d jsonb;
	dir text;
	nxt text;
	groups jsonb;
BEGIN
	CASE j.step
	WHEN 'fetch', 'gather' THEN
		SELECT * INTO bad FROM hagen.job q
		WHERE q.parent_id = j.id AND q.kind = 'fetch' AND q.status IN ('failed', 'canceled')
		ORDER BY q.id LIMIT 1;
		IF FOUND THEN
			RETURN jsonb_build_object('action', 'fail', 'error', coalesce(bad.last_error, 'a fetch ' || bad.status));
		ELSIF (j.state ->> 'fetches')::integer <= 0 THEN
			nxt := CASE WHEN j.step = 'gather' THEN 'join'
						WHEN hagen._compile_splits(j) THEN 'plan' ELSE 'compile' END;
			PERFORM hagen._compile_progress(j, nxt);
			RETURN jsonb_build_object('action', 'advance', 'step', nxt,
				'log', CASE WHEN j.step = 'gather'
							THEN format('the %s chunks in the work directory', j.state ->> 'chunk_count')
							ELSE format('%s input(s) in the work directory', jsonb_array_length(j.state -> 'inputs')) END);
		END IF;
		RETURN jsonb_build_object('action', 'advance', 'step', j.step,
								  'delay_ms', hagen._compile_watchdog_ms());
	WHEN 'plan' THEN
		IF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object' AND r ->> 'task' = 'plan'
		   AND jsonb_typeof(r -> 'segments') = 'array'
		   AND jsonb_array_length(r -> 'segments') = jsonb_array_length(j.state -> 'manifest' -> 'segments') THEN
			IF r ->> 'mode' = 'normalize' THEN
				groups := hagen._chunk_split(r, hagen._chunk_length());
			END IF;
			IF coalesce(jsonb_array_length(groups), 0) < 2 THEN
				RETURN jsonb_build_object('action', 'advance', 'step', 'compile',
					'log', CASE WHEN r ->> 'mode' = 'normalize'
							THEN format('%s s of video: compiled in one run (hagen.compile_chunk_length %s s)',
										round((r ->> 'duration')::numeric, 1), trim_scale(hagen._chunk_length()))
							ELSE format('the clips need no re-encode (%s): compiled in one run', r ->> 'mode') END);
			END IF;
			PERFORM hagen._chunk_queue(j, r, groups);
			PERFORM hagen._chunks_progress(j.id);
			RETURN jsonb_build_object('action', 'advance', 'step', 'chunks',
				'delay_ms', hagen._compile_watchdog_ms(),
				'log', format('re-encode of %s s of video at %sx%s, %s fps split into %s chunks',
							  round((r ->> 'duration')::numeric, 1), r ->> 'width', r ->> 'height',
							  r ->> 'fps', jsonb_array_length(groups)),
				'state', jsonb_build_object('plan', r, 'chunk_count', jsonb_array_length(groups)));
		END IF;
		RETURN hagen._compile_failure(o, 'compile failed');
	WHEN 'chunks' THEN
		RETURN hagen._chunks_check(j);
	WHEN 'compile', 'join' THEN
		IF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object' AND (r ->> 'duration') ~ '^[0-9.]+$'
		   AND (r ->> 'size') ~ '^[0-9]+$' AND (r ->> 'thumbnail_size') ~ '^[0-9]+$'
		   AND (o ->> 'uploaded')::boolean IS TRUE THEN
			-- A worker on another host stored both outputs itself.
			RETURN jsonb_build_object('action', 'succeed',
				'log', format('compiled %s s of video (%s mode, %s bytes) and stored it from %s',
							  r ->> 'duration', r ->> 'mode', r ->> 'size', coalesce(o ->> 'worker', 'a remote worker')),
				'state', jsonb_build_object('result', r));
		ELSIF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object' AND (r ->> 'duration') ~ '^[0-9.]+$'
		   AND (r ->> 'size') ~ '^[0-9]+$' AND (r ->> 'thumbnail_size') ~ '^[0-9]+$' THEN
			dir := hagen._compile_attempt_dir(j, j.total_attempts);
			PERFORM hagen._compile_progress(j, 'store');
			RETURN jsonb_build_object('action', 'advance', 'step', 'store',
				'log', format('%s %s s of video (%s mode, %s bytes)',
							  CASE j.step WHEN 'join' THEN format('joined %s chunks into', j.state ->> 'chunk_count')
										  ELSE 'compiled' END,
							  r ->> 'duration', r ->> 'mode', r ->> 'size'),
				'state', jsonb_build_object('result', r, 'attempt_dir', dir,
					'storing', 'thumbnail', 'key', j.state ->> 'thumbnail_key',
					'file', dir || '/thumbnail.jpg', 'bytes', (r ->> 'thumbnail_size')::bigint,
					'content_type', 'image/jpeg'));
		END IF;
		RETURN hagen._compile_failure(o, CASE j.step WHEN 'join' THEN 'the join of the chunks failed'
													 ELSE 'compile failed' END);
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		d := hagen._upload_interpret(j, o);
		IF d ->> 'action' <> 'stored' THEN
			RETURN d;
		ELSIF j.state ->> 'storing' = 'thumbnail' THEN
			-- The thumbnail is in; now the video, in parts when it is large.
			RETURN jsonb_build_object('action', 'advance',
				'step', hagen._store_step((j.state -> 'result' ->> 'size')::bigint),
				'log', format('thumbnail stored at %s', j.state ->> 'key'),
				'state', jsonb_build_object('storing', 'final', 'key', j.state ->> 'final_key',
					'file', j.state ->> 'attempt_dir' || '/final.mp4',
					'bytes', (j.state -> 'result' ->> 'size')::bigint, 'content_type', 'video/mp4',
					'upload_id', NULL, 'upload_done', NULL, 'parts', NULL));
		END IF;
		RETURN jsonb_strip_nulls(jsonb_build_object('action', 'succeed', 'log', d ->> 'log',
													'state', d -> 'state'));
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a compile job', j.step;
END;
$$;

-- Records the end of the compile on the project.
CREATE OR REPLACE FUNCTION hagen._compile_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
	omitted text;
BEGIN
	-- A split re-encode: chunks still at work stop, and the stored ones go.
	IF j.state ? 'chunk_count' THEN
		PERFORM hagen._chunks_end(j);
	END IF;
	SELECT * INTO p FROM hagen.video_project WHERE id = j.project_id FOR UPDATE;
	IF p.status <> 'compiling' THEN
		RETURN;
	END IF;
	IF j.status = 'succeeded' THEN
		SELECT string_agg(note, '; ' ORDER BY seq, part) INTO omitted
		FROM (SELECT c.sequence_order AS seq, 0 AS part,
					 format('clip %s left out (%s)', c.sequence_order,
							coalesce(c.error_message, c.status)) AS note
			  FROM hagen.video_clip c WHERE c.project_id = p.id AND c.status <> 'completed'
			  UNION ALL
			  SELECT c.sequence_order, 1,
					 format('the transition after clip %s became a cut (%s)', c.sequence_order,
							coalesce((SELECT q.last_error FROM hagen.job q WHERE q.clip_id = c.id
									  AND q.kind = 'transition' ORDER BY q.id DESC LIMIT 1),
									 c.transition_status))
			  FROM hagen.video_clip c WHERE c.project_id = p.id
				AND c.transition_status IN ('failed', 'canceled')) AS notes;
		UPDATE hagen.video_project v
		SET status = 'completed', completed_at = now(),
			final_video_url = hagen._stored_url(j.state ->> 'final_key'),
			thumbnail_url = hagen._stored_url(j.state ->> 'thumbnail_key'),
			duration = (j.state -> 'result' ->> 'duration')::real,
			actual_cost_cents = (SELECT coalesce(sum(cost_cents), 0) FROM hagen.video_clip c
								 WHERE c.project_id = p.id),
			error_message = omitted,
			progress = '{"step": "completed", "label": "Completed", "percent": 100}'
		WHERE v.id = p.id;
		PERFORM hagen._log(j.id, p.id, 'info', 'video completed',
						   jsonb_build_object('duration', j.state -> 'result' -> 'duration'));
	ELSIF j.status IN ('failed', 'canceled') THEN
		UPDATE hagen.video_project v
		SET status = 'failed', completed_at = now(), error_message = j.last_error,
			progress = jsonb_build_object('step', 'failed', 'label', 'Failed',
				'percent', coalesce((v.progress ->> 'percent')::numeric, 0))
		WHERE v.id = p.id;
	END IF;
END;
$$;

CREATE FUNCTION hagen._work_dir() RETURNS text
	LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'hagen_work_dir_sql';
COMMENT ON FUNCTION hagen._work_dir() IS
	'The work directory of the hagenkit workers (hagen.work_dir, absolute).';

-- Queues the removal of a directory of the work directory (relative),
-- unless one is queued already; not before `after` when given.  A cleanup
-- job belongs to no project (like a purge, it may outlive the project row):
-- its directory names what it cleans.
CREATE FUNCTION hagen._queue_cleanup(dir text, reason text, after timestamptz DEFAULT NULL)
	RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	id bigint;
BEGIN
	INSERT INTO hagen.job (kind, lane, step, state, run_at)
	VALUES ('cleanup', 'http', 'remove', jsonb_build_object('dir', dir, 'reason', reason),
			greatest(now(), coalesce(after, now())))
	ON CONFLICT DO NOTHING
	RETURNING job.id INTO id;
	RETURN id;
END;
$$;

-- After a job of a project ended: when the project has ended and none of
-- its jobs touching files is live, its work files go.
CREATE FUNCTION hagen._cleanup_if_settled(project uuid) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	st text;
BEGIN
	SELECT status INTO st FROM hagen.video_project WHERE id = project;
	IF st IS NULL OR st NOT IN ('completed', 'failed', 'canceled') THEN
		RETURN;
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.job q WHERE q.project_id = project
			   AND q.status IN ('queued', 'running') AND q.kind NOT IN ('cancel', 'cleanup')) THEN
		RETURN;
	END IF;
	PERFORM hagen._queue_cleanup(project::text, 'the project ' || st);
END;
$$;

-- A run that starts again keeps its files: a cleanup not yet begun is
-- called off.
CREATE FUNCTION hagen._cancel_cleanup(project uuid) RETURNS void
	LANGUAGE sql AS $$
	UPDATE hagen.job SET status = 'canceled', finished_at = now(), last_error = 'the project runs again'
	WHERE kind = 'cleanup' AND status = 'queued' AND state ->> 'dir' = project::text;
$$;

CREATE FUNCTION hagen._cleanup_effect(j hagen.job) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN jsonb_build_object('type', 'remove', 'path', j.state ->> 'dir');

CREATE FUNCTION hagen._cleanup_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN o ->> 'status' = 'ok'
		THEN jsonb_build_object('action', 'succeed', 'log',
			format('work files of %s %s (%s)', j.state ->> 'dir',
				   CASE WHEN (o ->> 'removed')::boolean THEN 'removed' ELSE 'already gone' END,
				   j.state ->> 'reason'))
		ELSE jsonb_build_object('action', 'retry', 'max_attempts', 3,
			'error', format('could not remove the work files of %s: %s', j.state ->> 'dir',
							coalesce(o ->> 'error', 'no reason given')))
		END;

-- Every file of the work directory: its top-level directory (a project's
-- id), size and time of last change.  Only the extension's owner may list
-- server directories; operators see the totals through hagen.work_usage.
CREATE FUNCTION hagen._work_files(OUT dir text, OUT path text, OUT bytes bigint,
								  OUT modified timestamptz)
	RETURNS SETOF record LANGUAGE sql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, hagen, pg_temp AS $$
	WITH RECURSIVE root AS (SELECT hagen._work_dir() AS r),
	f(dir, path, isdir, bytes, modified) AS (
		SELECT n, root.r || '/' || n, s.isdir, s.size, s.modification
		FROM root, pg_ls_dir(root.r, true, false) AS n, pg_stat_file(root.r || '/' || n, true) AS s
		UNION ALL
		SELECT f.dir, f.path || '/' || n, s.isdir, s.size, s.modification
		FROM f, pg_ls_dir(f.path, true, false) AS n, pg_stat_file(f.path || '/' || n, true) AS s
		WHERE f.isdir
	)
	SELECT dir, path, bytes, modified FROM f WHERE NOT isdir;
$$;

-- Removes what a crash left in the work directory: every directory older
-- than hagen.work_retention (default 1 day) that belongs to no running
-- project and no live job, and the remains of a removal that was cut short.
-- Returns how many removals it queued.  The dispatcher calls it with the
-- purge of history, about once an hour.
CREATE FUNCTION hagen.sweep_work_dir() RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	root text := hagen._work_dir();
	keep interval := hagen._setting_interval('hagen.work_retention', '1 day');
	e record;
	n integer := 0;
BEGIN
	FOR e IN
		SELECT d.name, CASE WHEN d.name ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$'
							THEN d.name::uuid END AS project
		FROM pg_ls_dir(root, true, false) AS d(name), pg_stat_file(root || '/' || d.name, true) AS s
		WHERE s.isdir AND (d.name LIKE '.removing%' OR s.modification < now() - keep)
	LOOP
		CONTINUE WHEN e.project IS NOT NULL AND (
			EXISTS (SELECT 1 FROM hagen.video_project p WHERE p.id = e.project
					AND p.status IN ('generating', 'compiling'))
			OR EXISTS (SELECT 1 FROM hagen.job q WHERE q.project_id = e.project
					   AND q.status IN ('queued', 'running') AND q.kind <> 'cleanup'));
		IF hagen._queue_cleanup(e.name,
				CASE WHEN e.name LIKE '.removing%' THEN 'a removal cut short'
					 ELSE format('unused for more than %s (hagen.work_retention)', keep) END) IS NOT NULL THEN
			n := n + 1;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

-- What the work directory holds, by top-level directory (a project, or
-- the remains of one), for operators: how many files, how many bytes, when
-- it last changed, and the project's status (NULL: no such project).
CREATE VIEW hagen.work_usage AS
SELECT w.dir, p.id AS project_id, p.workspace_id, p.status, count(*) AS files,
	   sum(w.bytes)::bigint AS bytes, pg_size_pretty(sum(w.bytes)) AS size,
	   max(w.modified) AS last_modified
FROM hagen._work_files() w
LEFT JOIN hagen.video_project p
	   ON p.id = CASE WHEN w.dir ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$' THEN w.dir::uuid END
GROUP BY w.dir, p.id, p.workspace_id, p.status;

ALTER FUNCTION hagen.sweep_work_dir() SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
GRANT EXECUTE ON FUNCTION hagen.sweep_work_dir() TO hagen_operator;
GRANT SELECT ON hagen.work_usage TO hagen_operator;

-- A compile queued by 0.3 is one step with no plan: it starts again the
-- new way, from the fetch of its inputs (those in the work directory are
-- not fetched again).
DO $$
DECLARE
	j hagen.job;
BEGIN
	FOR j IN SELECT * FROM hagen.job WHERE kind = 'compile' AND status IN ('queued', 'running') FOR UPDATE
	LOOP
		DELETE FROM hagen.job WHERE id = j.id;
		PERFORM hagen._compile_queue(p) FROM hagen.video_project p WHERE p.id = j.project_id;
	END LOOP;
END;
$$;

-- lib: S3's XML read with XMLPARSE/XMLTABLE/xpath and written with
-- xmlelement/xmlforest (src/sql/56_s3_answers.sql, 57_upload.sql,
-- 58_purge.sql): the regular expressions and the hand-written
-- escape/unescape functions go.
-- An answer body as an XML document, or NULL when it is not one (empty,
-- not well-formed, or XML content that is not a single document).  Checked
-- with xml_is_well_formed_document first, so no error is raised and no
-- subtransaction is needed.
CREATE OR REPLACE FUNCTION hagen._xml_doc(body text) RETURNS xml
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN CASE WHEN xml_is_well_formed_document(body) THEN XMLPARSE(DOCUMENT body) END;

-- The XPath of a path of element names, matched by local name: "/A/B" from
-- the root, "//A/B" anywhere, "A/B" relative to the context node (for the
-- columns of an XMLTABLE).
CREATE OR REPLACE FUNCTION hagen._xml_xpath(path text) RETURNS text
	LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
	IF path !~ '^(//?)?[A-Za-z_][A-Za-z0-9_.-]*(/[A-Za-z_][A-Za-z0-9_.-]*)*$' THEN
		RAISE EXCEPTION 'invalid XML path "%"', path
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A path is element names separated by "/", such as "/ListBucketResult/Contents/Key".';
	END IF;
	RETURN substring(path FROM '^/*')
		|| regexp_replace(ltrim(path, '/'), '([^/]+)', '*[local-name()="\1"]', 'g');
END;
$$;

-- The text of every element at path (see _xml_xpath) of a document, in
-- document order; an empty array when there is none or doc is NULL.
CREATE OR REPLACE FUNCTION hagen._xml_values(doc xml, path text) RETURNS text[]
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (
		SELECT coalesce(array_agg(x.v ORDER BY x.n), '{}')
		FROM XMLTABLE((hagen._xml_xpath(path)) PASSING (doc)
					  COLUMNS n FOR ORDINALITY, v text PATH '.') AS x
	);

-- The same for an answer body: every element named tag, anywhere in it
-- (none when the body is not XML).
CREATE OR REPLACE FUNCTION hagen._xml_values(body text, tag text) RETURNS text[]
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN hagen._xml_values(hagen._xml_doc(body), '//' || tag);

-- The text of the first element at path of a document, or NULL.
CREATE OR REPLACE FUNCTION hagen._xml_value(doc xml, path text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (hagen._xml_values(doc, path))[1];

CREATE OR REPLACE FUNCTION hagen._xml_value(body text, tag text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (hagen._xml_values(hagen._xml_doc(body), '//' || tag))[1];

-- The local name of a document's root element ("ListBucketResult"), or NULL.
CREATE OR REPLACE FUNCTION hagen._xml_root(doc xml) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN nullif((xpath('local-name(/*)', doc))[1]::text, '');

-- What a body that should be XML was instead, for an error message; NULL
-- when it is an XML document, or empty.
CREATE OR REPLACE FUNCTION hagen._xml_not_doc(body text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN CASE WHEN coalesce(body, '') <> '' AND NOT xml_is_well_formed_document(body) THEN
		format('the answer was not valid XML (%s bytes): it began with "%s%s"', octet_length(body),
			   left(regexp_replace(body, '[[:space:][:cntrl:]]+', ' ', 'g'), 80),
			   CASE WHEN length(body) > 80 THEN '...' ELSE '' END) END;

-- "Code: Message" of an S3 error answer (<Error><Code>…</Code><Message>…),
-- or NULL when the answer is not one.
CREATE OR REPLACE FUNCTION hagen._s3_error(o jsonb) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN (
		SELECT nullif(concat_ws(': ', e.code, e.message), '')
		FROM XMLTABLE('/*[local-name()="Error"]' PASSING (hagen._xml_doc(o ->> 'body_text'))
					  COLUMNS code text PATH '*[local-name()="Code"][1]',
							  message text PATH '*[local-name()="Message"][1]') AS e
	);

-- The decision for an S3 request that did not succeed: transport errors,
-- 429, 5xx and the codes S3 asks clients to retry (SlowDown, InternalError,
-- RequestTimeout…) are retried with back-off (at least Retry-After); any
-- other answer is final.  The error names what was being done, the HTTP
-- status and S3's own Code and Message (or what came instead of them).
CREATE OR REPLACE FUNCTION hagen._s3_failure(o jsonb, what text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	code text := hagen._xml_value(hagen._xml_doc(o ->> 'body_text'), '/Error/Code');
	ra text := o -> 'headers' ->> 'retry-after';
	err text;
BEGIN
	err := format('%s failed: %s', what,
		CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
			 ELSE format('HTTP %s%s', status,
						 coalesce(': ' || left(coalesce(hagen._s3_error(o),
														hagen._xml_not_doc(o ->> 'body_text')), 400), '')) END);
	IF status = 0 OR status = 429 OR status >= 500
	   OR code IN ('SlowDown', 'InternalError', 'ServiceUnavailable', 'RequestTimeout',
				   'RequestTimeTooSkewed', 'OperationAborted') THEN
		RETURN jsonb_strip_nulls(jsonb_build_object('action', 'retry', 'error', err,
			'retry_after_ms', CASE WHEN ra ~ '^\s*\d+(\.\d+)?\s*$' THEN (ra::numeric * 1000)::bigint END));
	END IF;
	RETURN jsonb_build_object('action', 'fail', 'error', err);
END;
$$;

-- The decision for a successful (2xx) answer that is not the document
-- expected (the local name of its root element), or NULL when it is.  An
-- <Error> in a 200 (S3 may answer CompleteMultipartUpload so) is an S3
-- error like the others; an answer that is not XML, or another document,
-- is retried with an error saying what came instead.
CREATE OR REPLACE FUNCTION hagen._s3_unexpected(o jsonb, doc xml, expected text, what text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	root text := hagen._xml_root(doc);
BEGIN
	IF root = expected THEN
		RETURN NULL;
	ELSIF root = 'Error' THEN
		RETURN hagen._s3_failure(o, what);
	END IF;
	RETURN jsonb_build_object('action', 'retry', 'error',
		format('%s failed: HTTP %s, but %s', what, o ->> 'status',
			   CASE WHEN doc IS NOT NULL THEN format('the answer was a <%s>, not a <%s>', root, expected)
					ELSE coalesce(hagen._xml_not_doc(o ->> 'body_text'),
								  format('the answer was empty (a <%s> was expected)', expected)) END));
END;
$$;

-- The body of CompleteMultipartUpload: every part's number and ETag, in order.
CREATE OR REPLACE FUNCTION hagen._complete_xml(parts jsonb, part_count integer) RETURNS text
	LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	missing integer;
BEGIN
	SELECT min(n) INTO missing FROM generate_series(1, part_count) n WHERE NOT parts ? n::text;
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'part % of % has no ETag', missing, part_count;
	END IF;
	RETURN xmlelement(name "CompleteMultipartUpload",
					  xmlattributes('http://s3.amazonaws.com/doc/2006-03-01/' AS xmlns),
					  (SELECT xmlagg(xmlelement(name "Part",
												xmlforest(n AS "PartNumber", parts ->> n::text AS "ETag"))
									 ORDER BY n)
					   FROM generate_series(1, part_count) n))::text;
END;
$$;

-- Reads the outcome of a storing step.  Returns the job's next decision, or
-- {"action": "stored"} (with "log" and "state" to keep) once the object is
-- in the bucket: the job's own adapter says what that means for it.
CREATE OR REPLACE FUNCTION hagen._upload_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	key text := j.state ->> 'key';
	what text;
	doc xml;
	bad jsonb;
	uid text;
	plan record;
BEGIN
	CASE j.step
	WHEN 'store' THEN
		IF status BETWEEN 200 AND 299 THEN
			RETURN '{"action": "stored"}';
		END IF;
		RETURN hagen._s3_failure(o, format('upload of %s to storage', key));
	WHEN 'upload_create' THEN
		what := format('start of the multipart upload of %s', key);
		IF status BETWEEN 200 AND 299 THEN
			doc := hagen._xml_doc(o ->> 'body_text');
			bad := hagen._s3_unexpected(o, doc, 'InitiateMultipartUploadResult', what);
			IF bad IS NOT NULL THEN
				RETURN bad;
			END IF;
			uid := hagen._xml_value(doc, '/InitiateMultipartUploadResult/UploadId');
			IF coalesce(uid, '') = '' THEN
				RETURN jsonb_build_object('action', 'fail', 'error', what || ' failed: the answer names no UploadId');
			END IF;
			plan := hagen._multipart_plan((j.state ->> 'bytes')::bigint);
			RETURN jsonb_build_object('action', 'advance', 'step', 'upload_parts',
				'schedule_parts', true, 'delay_ms', hagen._upload_watchdog_ms(),
				'log', format('multipart upload of %s started: %s parts of %s bytes', key,
							  plan.part_count, plan.part_bytes),
				'state', jsonb_build_object('upload_id', uid, 'part_bytes', plan.part_bytes,
											'part_count', plan.part_count, 'parts', '{}'::jsonb,
											'next_part', 1));
		END IF;
		RETURN hagen._s3_failure(o, what);
	WHEN 'upload_parts' THEN
		RETURN hagen._upload_parts_check(j);
	WHEN 'upload_complete' THEN
		what := format('completion of the multipart upload of %s', key);
		doc := hagen._xml_doc(o ->> 'body_text');
		IF hagen._xml_value(doc, '/Error/Code') = 'NoSuchUpload' THEN
			-- Completed by an earlier try whose answer was lost, or gone: look.
			RETURN jsonb_build_object('action', 'advance', 'step', 'upload_check',
				'log', 'the multipart upload is no longer known; checking whether the object is stored');
		ELSIF status BETWEEN 200 AND 299 THEN
			-- S3 may answer 200 with an <Error> inside; an answer that is
			-- not XML is retried (a completion already done then meets
			-- NoSuchUpload, and the object is looked at).
			bad := CASE WHEN coalesce(o ->> 'body_text', '') <> '' THEN
				hagen._s3_unexpected(o, doc, 'CompleteMultipartUploadResult', what) END;
			IF bad IS NOT NULL THEN
				RETURN bad;
			END IF;
			RETURN jsonb_build_object('action', 'stored', 'state', '{"upload_done": true}'::jsonb,
				'log', format('multipart upload of %s completed (%s parts)', key, j.state ->> 'part_count'));
		END IF;
		RETURN hagen._s3_failure(o, what);
	WHEN 'upload_check' THEN
		IF status BETWEEN 200 AND 299
		   AND o -> 'headers' ->> 'content-length' = j.state ->> 'bytes' THEN
			RETURN jsonb_build_object('action', 'stored', 'state', '{"upload_done": true}'::jsonb,
				'log', format('%s is stored (%s bytes)', key, j.state ->> 'bytes'));
		ELSIF status BETWEEN 200 AND 299 OR status = 404 THEN
			RETURN jsonb_build_object('action', 'fail', 'error',
				format('the multipart upload of %s was lost before it completed (the bucket answers HTTP %s%s)',
					   key, status, coalesce(' with ' || (o -> 'headers' ->> 'content-length') || ' bytes', '')));
		END IF;
		RETURN hagen._s3_failure(o, format('check of %s in storage', key));
	END CASE;
	RAISE EXCEPTION 'unknown storing step "%"', j.step;
END;
$$;

-- The body of a DeleteObjects request for some keys (at most 1000).
CREATE OR REPLACE FUNCTION hagen._delete_xml(keys jsonb) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN xmlelement(name "Delete", xmlattributes('http://s3.amazonaws.com/doc/2006-03-01/' AS xmlns),
					  xmlelement(name "Quiet", true),
					  (SELECT xmlagg(xmlelement(name "Object", xmlelement(name "Key", k)) ORDER BY n)
					   FROM jsonb_array_elements_text(keys) WITH ORDINALITY AS x(k, n)))::text;

-- Reads the outcome of a purge step and moves on: abort the next upload,
-- list the next page, delete it; done when a page is the last one.
CREATE OR REPLACE FUNCTION hagen._purge_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	body text := o ->> 'body_text';
	prefix text := j.state ->> 'prefix';
	doc xml;
	bad jsonb;
	keys text[];
	more boolean;
	token text;
	errors text[];
	failed integer;
	deleted integer;
	rest jsonb;
BEGIN
	IF status NOT BETWEEN 200 AND 299 THEN
		IF j.step = 'abort' AND (status IN (404, 405, 501) OR status BETWEEN 200 AND 299) THEN
			NULL;	-- gone already, or a server without AbortMultipartUpload: move on
		ELSE
			RETURN hagen._s3_failure(o, CASE j.step
				WHEN 'abort' THEN format('abort of the multipart upload of %s', j.state -> 'aborts' -> 0 ->> 'key')
				WHEN 'list' THEN format('listing of %s', prefix)
				ELSE format('deletion of %s objects under %s', jsonb_array_length(j.state -> 'keys'), prefix) END);
		END IF;
	END IF;
	CASE j.step
	WHEN 'abort' THEN
		rest := (j.state -> 'aborts') - 0;
		RETURN jsonb_build_object('action', 'advance',
			'step', CASE WHEN jsonb_array_length(rest) > 0 THEN 'abort' ELSE 'list' END,
			'state', jsonb_build_object('aborts', rest),
			'log', format('multipart upload of %s aborted (HTTP %s)',
						  j.state -> 'aborts' -> 0 ->> 'key', status));
	WHEN 'list' THEN
		doc := hagen._xml_doc(body);
		bad := hagen._s3_unexpected(o, doc, 'ListBucketResult', format('listing of %s', prefix));
		IF bad IS NOT NULL THEN
			RETURN bad;
		END IF;
		keys := hagen._xml_values(doc, '/ListBucketResult/Contents/Key');
		more := hagen._xml_value(doc, '/ListBucketResult/IsTruncated') = 'true';
		token := hagen._xml_value(doc, '/ListBucketResult/NextContinuationToken');
		IF more AND coalesce(token, '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error',
				format('listing of %s failed: a truncated page without NextContinuationToken', prefix));
		END IF;
		IF cardinality(keys) > 0 THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'delete',
				'state', jsonb_build_object('keys', to_jsonb(keys), 'more', more,
					'token', CASE WHEN more THEN token END,
					'pages', (j.state ->> 'pages')::integer + 1));
		ELSIF more THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'list',
				'state', jsonb_build_object('token', token, 'pages', (j.state ->> 'pages')::integer + 1));
		END IF;
		RETURN hagen._purge_done(j);
	WHEN 'delete' THEN
		doc := hagen._xml_doc(body);
		bad := hagen._s3_unexpected(o, doc, 'DeleteResult',
			format('deletion of %s objects under %s', jsonb_array_length(j.state -> 'keys'), prefix));
		IF bad IS NOT NULL THEN
			RETURN bad;
		END IF;
		-- Quiet mode: the answer lists only the keys that were not deleted.
		SELECT coalesce(array_agg(format('%s (%s)', e.key, concat_ws(': ', e.code, e.message))
								  ORDER BY e.n), '{}')
		INTO errors
		FROM XMLTABLE((hagen._xml_xpath('/DeleteResult/Error')) PASSING (doc)
					  COLUMNS n FOR ORDINALITY,
							  key text PATH '*[local-name()="Key"][1]',
							  code text PATH '*[local-name()="Code"][1]',
							  message text PATH '*[local-name()="Message"][1]') AS e;
		failed := (j.state ->> 'failed')::integer + cardinality(errors);
		deleted := (j.state ->> 'deleted')::integer + jsonb_array_length(j.state -> 'keys') - cardinality(errors);
		j.state := j.state || jsonb_build_object('keys', '[]'::jsonb, 'failed', failed, 'deleted', deleted,
			'first_error', coalesce(j.state ->> 'first_error', errors[1]));
		IF (j.state ->> 'more')::boolean THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'list', 'state', j.state);
		END IF;
		RETURN hagen._purge_done(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a purge job', j.step;
END;
$$;
DROP FUNCTION hagen._xml_unescape(text);
DROP FUNCTION hagen._xml_escape(text);

-- ---------------------------------------------------------------------
-- 0.4: the app's 27 room types (hyphenated, 0.3's names kept as aliases),
-- their prompts in the app's structure, and room labels in clip and
-- transition prompts.  room_prompt holds seeded rows only: it is replaced.
DROP FUNCTION hagen._room_prompt(text);
DROP FUNCTION hagen._transition_prompt();
DROP TABLE hagen.room_prompt;
-- The room types of the app hagenkit replaces, spelled as it spells them,
-- each with the parts of its default prompt in the app's structure (camera
-- action, direction and speed, framing, subject, style), its name in
-- prose (for transition prompts) and the ambience asked for with native
-- audio.  aliases are other spellings that mean the same room (the room
-- types of hagenkit 0.3).  Room types are matched after lower-casing and
-- turning spaces and underscores into hyphens, so "living_room" and
-- "Living Room" are "living-room".  Operators may edit or add rows; a room
-- type found nowhere gets the prompt of "other".
CREATE TABLE hagen.room_prompt (
	room_type	text PRIMARY KEY CHECK (room_type ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
	name		text NOT NULL CHECK (name <> ''),
	camera		text NOT NULL CHECK (camera <> ''),
	movement	text NOT NULL CHECK (movement <> ''),
	framing		text NOT NULL CHECK (framing <> ''),
	subject		text NOT NULL CHECK (subject <> ''),
	style		text NOT NULL CHECK (style <> ''),
	ambience	text NOT NULL CHECK (ambience <> ''),
	aliases		text[] NOT NULL DEFAULT '{}'
		CHECK (array_position(aliases, NULL) IS NULL)
);
INSERT INTO hagen.room_prompt (room_type, name, camera, movement, framing, subject, style, ambience, aliases) VALUES
	('exterior', 'exterior', 'Slow dolly-in', 'gliding steadily forward toward the entrance', 'wide establishing shot at eye level', 'the front of the house with its facade, entrance and landscaping', 'photorealistic real estate video, soft daylight, gentle parallax, stabilized gimbal motion', 'birdsong and a light breeze outside', '{front-yard}'),
	('hallway', 'hallway', 'Smooth walk-through', 'moving slowly forward down the hall', 'wide centred shot at eye level', 'the hallway with its doors, floor and lights', 'photorealistic real estate video, even natural light, stabilized gimbal motion', 'soft footsteps in a quiet hall', '{entryway,staircase,hall}'),
	('living-room', 'living room', 'Slow dolly-in', 'moving gently forward with subtle parallax', 'wide-angle shot at eye level', 'the living room with its seating area and windows', 'photorealistic real estate video, bright inviting daylight, stabilized gimbal motion', 'a quiet, warm room tone', '{family-room,lounge}'),
	('kitchen', 'kitchen', 'Slow lateral glide', 'moving steadily from left to right along the counters', 'medium-wide shot at counter height', 'the kitchen with its island, countertops and appliances', 'photorealistic real estate video, crisp clean light, stabilized gimbal motion', 'a faint kitchen hum', '{}'),
	('dining-room', 'dining room', 'Slow orbit', 'circling gently around the table', 'medium-wide shot at eye level', 'the dining room with its table, chairs and lighting', 'photorealistic real estate video, warm elegant light, stabilized gimbal motion', 'a calm, quiet room tone', '{}'),
	('tv-room', 'TV room', 'Slow pan', 'turning gently from left to right', 'wide shot at seated eye level', 'the TV room with its sofa and screen', 'photorealistic real estate video, soft cosy light, stabilized gimbal motion', 'a soft, cosy room tone', '{den,media-room}'),
	('bedroom', 'bedroom', 'Slow push-in', 'moving softly forward toward the bed', 'wide shot at eye level', 'the bedroom with the bed, textiles and windows', 'photorealistic real estate video, soft morning light through the curtains, serene mood', 'a very quiet, restful room tone', '{primary-bedroom,master-bedroom}'),
	('childrens-room', 'children''s room', 'Gentle dolly-in', 'moving slowly forward', 'wide shot from a low eye level', 'the children''s room with its bed, toys and playful colours', 'photorealistic real estate video, bright cheerful daylight, stabilized gimbal motion', 'a soft, quiet room tone', '{kids-room,nursery}'),
	('bathroom', 'bathroom', 'Slow pan', 'sweeping gently from the vanity to the shower', 'medium shot at eye level', 'the bathroom with its vanity, tiles and fixtures', 'photorealistic real estate video, bright spa-like light, gleaming surfaces', 'a faint echo of a quiet bathroom', '{}'),
	('toilet', 'toilet', 'Slow tilt-down', 'moving gently downward', 'medium close shot, centred', 'the toilet room with its fixtures and tiles', 'photorealistic real estate video, clean even light, stabilized gimbal motion', 'a faint echo of a small quiet room', '{wc,powder-room}'),
	('walk-in-closet', 'walk-in closet', 'Slow dolly-in', 'moving gently forward between the shelves', 'medium-wide shot at eye level', 'the walk-in closet with its shelving and hanging space', 'photorealistic real estate video, soft even light, stabilized gimbal motion', 'a hushed, muffled room tone', '{closet,wardrobe}'),
	('laundry-room', 'laundry room', 'Slow push-in', 'moving gently toward the appliances', 'medium shot at counter height', 'the laundry room with its washer, dryer and storage', 'photorealistic real estate video, bright clean light, stabilized gimbal motion', 'a faint appliance hum', '{laundry}'),
	('office', 'office', 'Slow push-in', 'moving gently toward the desk and window', 'medium-wide shot at eye level', 'the office with its desk, chair and shelves', 'photorealistic real estate video, focused calm daylight, stabilized gimbal motion', 'a quiet study room tone', '{study}'),
	('library', 'library', 'Slow lateral track', 'moving steadily along the bookshelves', 'medium-wide shot at eye level', 'the library with its bookshelves and reading chair', 'photorealistic real estate video, warm soft light, stabilized gimbal motion', 'a hushed, quiet library tone', '{}'),
	('gym', 'gym', 'Slow pan', 'sweeping gently across the room', 'wide shot at eye level', 'the home gym with its equipment, mirrors and flooring', 'photorealistic real estate video, bright even light, stabilized gimbal motion', 'a quiet room tone with a faint ventilation hum', '{fitness-room}'),
	('sauna', 'sauna', 'Slow push-in', 'moving gently toward the benches', 'medium-wide shot at seated eye level', 'the sauna with its wooden benches and warm light', 'photorealistic real estate video, warm golden light, calm steady motion', 'a soft crackle of heat in a wooden room', '{}'),
	('pool-area', 'pool area', 'Low slow dolly', 'gliding along the pool edge', 'wide shot close to the water', 'the pool area with the shimmering water, deck and loungers', 'photorealistic real estate video, bright clear sky, stabilized gimbal motion', 'soft water lapping', '{pool}'),
	('hobby-room', 'hobby room', 'Slow dolly-in', 'moving gently forward', 'medium-wide shot at eye level', 'the hobby room with its workspace and equipment', 'photorealistic real estate video, even natural light, stabilized gimbal motion', 'a quiet room tone', '{playroom,games-room}'),
	('pantry', 'pantry', 'Slow tilt-up', 'moving gently upward along the shelves', 'medium shot at eye level', 'the pantry with its shelves and storage', 'photorealistic real estate video, clean even light, stabilized gimbal motion', 'a faint, muffled room tone', '{}'),
	('storage-room', 'storage room', 'Slow pan', 'turning gently across the space', 'wide shot at eye level', 'the storage room with its shelving and open space', 'photorealistic real estate video, even light, stabilized gimbal motion', 'a quiet, muffled room tone', '{storage}'),
	('utility-room', 'utility room', 'Slow pan', 'turning gently across the installations', 'medium-wide shot at eye level', 'the utility room with its installations and storage', 'photorealistic real estate video, clean even light, stabilized gimbal motion', 'a faint technical hum', '{boiler-room}'),
	('conservatory', 'conservatory', 'Slow dolly-in', 'moving gently toward the glass walls', 'wide shot at eye level', 'the conservatory with its glass walls, plants and daylight', 'photorealistic real estate video, bright natural light, stabilized gimbal motion', 'birdsong heard through glass and a soft room tone', '{sunroom,winter-garden}'),
	('garage', 'garage', 'Slow lateral pan', 'moving steadily across the space', 'wide shot at eye level', 'the garage with its floor, doors and storage', 'photorealistic real estate video, clean even lighting, stabilized gimbal motion', 'a quiet garage echo', '{carport}'),
	('terrace', 'terrace', 'Slow lateral slide', 'moving gently toward the view', 'wide shot at eye level', 'the terrace with its outdoor furniture and view', 'photorealistic real estate video, relaxed late-afternoon light, stabilized gimbal motion', 'a light breeze and distant birds', '{patio,balcony,deck}'),
	('garden', 'garden', 'Slow crane-up', 'rising gently while moving forward', 'wide shot', 'the garden with its lawn, plants and paths', 'photorealistic real estate video, calm afternoon light, plants swaying slightly', 'birds and leaves rustling in a light breeze', '{backyard,yard}'),
	('landscape', 'landscape', 'Slow aerial pan', 'sweeping gently across the horizon', 'extra-wide shot', 'the surrounding landscape and the view from the property', 'photorealistic real estate video, atmospheric depth, golden light', 'wind and distant nature ambience', '{view,surroundings}'),
	('other', 'room', 'Slow smooth dolly-in', 'moving gently forward with subtle parallax', 'wide shot at eye level', 'the space', 'photorealistic real estate video, natural light, stabilized gimbal motion', 'a natural, quiet ambience of the space', '{basement}');

-- A room type as the room_prompt table spells it: lower case, spaces and
-- underscores as hyphens, apostrophes dropped ("Children''s Room" ->
-- "childrens-room"); NULL for none.
CREATE FUNCTION hagen._room_key(room_type text) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN nullif(trim(BOTH '-' FROM regexp_replace(regexp_replace(lower(btrim(room_type)),
		'[''\u2019]', '', 'g'), '[\s_-]+', '-', 'g')), '');

-- The room of a room type: its own row, the row that lists it as an alias,
-- else the row of "other" (or, if an operator deleted that, a general one).
CREATE FUNCTION hagen._room(room_type text) RETURNS hagen.room_prompt
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	found hagen.room_prompt;
BEGIN
	-- (PL/pgSQL: a SQL function with a query for body is parsed and planned
	-- at every call.)
	SELECT (f.r).* INTO found FROM (
		SELECT r, 0 AS rank FROM hagen.room_prompt r WHERE r.room_type = hagen._room_key(_room.room_type)
		UNION ALL
		SELECT r, 1 FROM hagen.room_prompt r WHERE hagen._room_key(_room.room_type) = ANY (r.aliases)
		UNION ALL
		SELECT r, 2 FROM hagen.room_prompt r WHERE r.room_type = 'other'
		UNION ALL
		SELECT ROW('other', 'room', 'Slow smooth dolly-in', 'moving gently forward with subtle parallax',
				   'wide shot at eye level', 'the space',
				   'photorealistic real estate video, natural light, stabilized gimbal motion',
				   'a natural, quiet ambience of the space', '{}'::text[])::hagen.room_prompt, 3
	) AS f
	ORDER BY rank, (r).room_type LIMIT 1;
	RETURN found;
END;
$$;

-- What a room is called in prose: its label, else the name of its room
-- type (a type the table does not know, or one of "other", as it is
-- written, hyphens as spaces), else "room".
CREATE FUNCTION hagen._room_name(room_type text, label text) RETURNS text
	LANGUAGE sql STABLE
	RETURN coalesce(nullif(btrim(label), ''),
		nullif((hagen._room(room_type)).name, (hagen._room('other')).name),
		replace(nullif(hagen._room_key(room_type), 'other'), '-', ' '),
		'room');

-- The default motion prompt of a room type, in the app's structure:
-- "{camera}, {movement}, {framing}: {subject}. {style}", where the subject
-- ends with ", the {label}" when there is one; a room type of "other" (or
-- an unknown one) is the subject itself.
CREATE FUNCTION hagen._room_motion(room_type text, label text DEFAULT NULL) RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	r hagen.room_prompt := hagen._room(room_type);
	subject text := r.subject || coalesce(', the ' || nullif(btrim(label), ''), '');
BEGIN
	IF r.room_type = 'other' AND hagen._room_name(room_type, label) <> 'room' THEN
		subject := 'the ' || hagen._room_name(room_type, label);
	END IF;
	RETURN format('%s, %s, %s: %s. %s', upper(left(r.camera, 1)) || substr(r.camera, 2),
				  r.movement, r.framing, subject, upper(left(r.style, 1)) || substr(r.style, 2));
END;
$$;

-- The full prompt of a clip: its own motion prompt, or its room's with its
-- label; with native audio on, a sound description from the room's
-- ambience and the music's mood and category.
CREATE OR REPLACE FUNCTION hagen._clip_prompt(c hagen.video_clip, p hagen.video_project) RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	prompt text := coalesce(c.motion_prompt, hagen._room_motion(c.room_type, c.room_label));
	m hagen.music_track;
BEGIN
	IF NOT p.generate_native_audio THEN
		RETURN prompt;
	END IF;
	SELECT * INTO m FROM hagen.music_track WHERE id = p.music_track_id;
	RETURN rtrim(prompt, '. ') || '. Sound: ' || (hagen._room(c.room_type)).ambience
		|| CASE WHEN m.id IS NOT NULL THEN
				format(', in a %s mood that suits %s music',
					   coalesce(nullif(btrim(m.mood), ''), 'calm'),
					   coalesce(nullif(btrim(m.category), ''), 'background'))
		   ELSE '' END
		|| '; no speech, no music.';
END;
$$;

-- The prompt of a seamless transition from a clip into the next one.
CREATE FUNCTION hagen._transition_prompt(c hagen.video_clip, next hagen.video_clip) RETURNS text
	LANGUAGE sql STABLE
	RETURN format('Seamless continuous camera move out of the %s, moving slowly forward towards the %s, '
				  'smooth steady glide, consistent lighting, photorealistic real estate video, no cuts',
				  hagen._room_name(c.room_type, c.room_label), hagen._room_name(next.room_type, next.room_label));

-- Queues a generation job for every clip and seamless transition of a
-- project that is not completed and has no live job.  Returns how many.
CREATE OR REPLACE FUNCTION hagen._enqueue_generation(p hagen.video_project) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	c record;
	n integer := 0;
	m hagen.video_model := hagen._video_model(p.provider);
	time_limit interval := hagen._setting_interval('hagen.clip_timeout', '20 minutes');
	common jsonb;
	first_step text := hagen._first_step(p.provider, p.framing);
BEGIN
	common := jsonb_build_object('model', m.model, 'resolution', m.resolution,
								 'fields', hagen._model_fields(m), 'aspect_ratio', p.aspect_ratio,
								 'negative_prompt', hagen._negative_prompt(),
								 'framing', p.framing, 'image_route', hagen._image_route(p.provider),
								 'max_image_side', m.max_image_side, 'max_image_bytes', m.max_image_bytes);
	FOR c IN
		SELECT v.*, lead(v.source_image_url) OVER w AS next_source, lead(v.id) OVER w AS next_id
		FROM hagen.video_clip v WHERE v.project_id = p.id
		WINDOW w AS (ORDER BY v.sequence_order)
		ORDER BY v.sequence_order
	LOOP
		IF c.status <> 'completed' THEN
			IF hagen._enqueue(p.id, c.id, 'clip', p.provider, first_step, common || jsonb_build_object(
					'start_image', c.source_image_url,
					'end_image', coalesce(c.end_image_url, c.source_image_url),
					'images', hagen._fal_image_steps(ARRAY[c.source_image_url,
						CASE WHEN m.end_image_field IS NOT NULL THEN c.end_image_url END]),
					'prompt', hagen._clip_prompt((SELECT v FROM hagen.video_clip v WHERE v.id = c.id), p),
					'duration', c.duration::integer,
					'audio', p.generate_native_audio,
					'key', hagen.get_video_path(p.workspace_id, p.id, c.id || '.mp4'),
					'file', hagen._work_file(p.id, c.id || '.mp4'),
					'cost_cents', hagen._cost_cents(m, c.duration::numeric, p.generate_native_audio)),
					'http', time_limit) IS NOT NULL THEN
				n := n + 1;
			END IF;
			UPDATE hagen.video_clip SET status = 'processing', error_message = NULL
			WHERE id = c.id;
		END IF;
		IF c.transition_type = 'seamless' AND c.next_id IS NOT NULL
		   AND c.transition_status IS DISTINCT FROM 'completed' THEN
			IF hagen._enqueue(p.id, c.id, 'transition', p.provider, first_step, common || jsonb_build_object(
					'start_image', coalesce(c.end_image_url, c.source_image_url),
					'end_image', c.next_source,
					'images', hagen._fal_image_steps(ARRAY[coalesce(c.end_image_url, c.source_image_url),
						CASE WHEN m.end_image_field IS NOT NULL THEN c.next_source END]),
					'next_clip_id', c.next_id,
					'prompt', hagen._transition_prompt((SELECT v FROM hagen.video_clip v WHERE v.id = c.id),
													   (SELECT v FROM hagen.video_clip v WHERE v.id = c.next_id)),
					'duration', 5,
					'audio', false,
					'key', hagen.get_video_path(p.workspace_id, p.id, 'transition_' || c.id || '.mp4'),
					'file', hagen._work_file(p.id, 'transition_' || c.id || '.mp4'),
					'cost_cents', hagen._cost_cents(m, 5, false)),
					'http', time_limit) IS NOT NULL THEN
				n := n + 1;
			END IF;
			UPDATE hagen.video_clip SET transition_status = 'processing' WHERE id = c.id;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

-- Adds a clip to a project that has not started yet and returns its id.
-- A NULL sequence_order appends the clip after the last one.
CREATE OR REPLACE FUNCTION hagen.add_clip(project_id uuid,
							   source_image_url text,
							   end_image_url text DEFAULT NULL,
							   room_type text DEFAULT NULL,
							   room_label text DEFAULT NULL,
							   motion_prompt text DEFAULT NULL,
							   duration real DEFAULT 5,
							   transition_type text DEFAULT 'cut',
							   sequence_order integer DEFAULT NULL,
							   image_id text DEFAULT NULL)
	RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
	seq integer := sequence_order;
	new_id uuid;
BEGIN
	p := hagen._project(project_id);
	PERFORM 1 FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	IF p.status NOT IN ('pending', 'failed', 'canceled', 'completed') THEN
		RAISE EXCEPTION 'cannot add a clip to video project % while it is %', p.id, p.status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Wait until the project has finished, or cancel it with hagen.cancel_video().';
	END IF;
	PERFORM hagen._check_url('source image URL', source_image_url);
	IF end_image_url IS NOT NULL THEN
		PERFORM hagen._check_url('end image URL', end_image_url);
	END IF;
	PERFORM hagen._check_choice('clip duration', duration, ARRAY[5, 10]::real[]);
	PERFORM hagen._check_choice('transition type', transition_type, ARRAY['cut', 'seamless']);
	IF length(room_type) > 100 OR length(room_label) > 200 THEN
		RAISE EXCEPTION 'room % "%..." is % characters long',
			CASE WHEN length(room_type) > 100 THEN 'type' ELSE 'label' END,
			left(CASE WHEN length(room_type) > 100 THEN room_type ELSE room_label END, 40),
			length(CASE WHEN length(room_type) > 100 THEN room_type ELSE room_label END)
			USING ERRCODE = 'string_data_right_truncation',
				  HINT = 'A room type has at most 100 characters and a room label at most 200; both go into the prompt.';
	END IF;
	IF motion_prompt IS NOT NULL AND length(motion_prompt) > 2000 THEN
		RAISE EXCEPTION 'motion prompt is % characters long', length(motion_prompt)
			USING ERRCODE = 'string_data_right_truncation',
				  HINT = 'Keep it under 2000 characters; providers refuse longer prompts.';
	END IF;
	IF coalesce(hagen._setting('hagen.max_clips_per_project')::integer, 20) > 0
	   AND (SELECT count(*) FROM hagen.video_clip c WHERE c.project_id = p.id)
		   >= coalesce(hagen._setting('hagen.max_clips_per_project')::integer, 20) THEN
		RAISE EXCEPTION 'video project % already has % clips, the most hagen.max_clips_per_project allows',
			p.id, hagen._setting('hagen.max_clips_per_project', '20')
			USING ERRCODE = 'program_limit_exceeded',
				  HINT = 'Make another project for the other photos, or ask for a higher limit.';
	END IF;
	IF seq IS NULL THEN
		SELECT coalesce(max(c.sequence_order) + 1, 0) INTO seq
		FROM hagen.video_clip c WHERE c.project_id = p.id;
	ELSIF seq < 0 THEN
		RAISE EXCEPTION 'invalid sequence order %', seq
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a number of 0 or more, or NULL to append.';
	ELSIF EXISTS (SELECT 1 FROM hagen.video_clip c
				  WHERE c.project_id = p.id AND c.sequence_order = seq) THEN
		RAISE EXCEPTION 'video project % already has a clip at sequence order %', p.id, seq
			USING ERRCODE = 'unique_violation',
				  HINT = 'Pick a free position, or pass NULL to append.';
	END IF;

	INSERT INTO hagen.video_clip AS c (project_id, image_id, source_image_url, end_image_url,
			room_type, room_label, motion_prompt, duration, transition_type, sequence_order)
	VALUES (p.id, image_id, source_image_url, end_image_url, room_type, room_label,
			nullif(btrim(motion_prompt), ''), duration, transition_type, seq)
	RETURNING c.id INTO new_id;
	UPDATE hagen.video_project v SET clip_count = v.clip_count + 1 WHERE v.id = p.id;
	RETURN new_id;
END;
$$;

REVOKE ALL ON FUNCTION hagen._room_key(text), hagen._room(text), hagen._room_name(text, text),
	hagen._room_motion(text, text), hagen._transition_prompt(hagen.video_clip, hagen.video_clip) FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON hagen.room_prompt TO hagen_operator;
ALTER FUNCTION hagen.add_clip(uuid, text, text, text, text, text, real, text, integer, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;

-- ---------------------------------------------------------------------
-- 0.4: managing projects: property ids and framing, update_project,
-- remove_clip, move_clip, delete_project (whose provider cancels outlive
-- the project), list_projects.
ALTER TABLE hagen.video_project
	-- The app's id of the property the video shows.
	ADD COLUMN property_id text,
	-- How a photo is fitted to the aspect ratio before it goes to the
	-- provider: crop (the centre, filling the frame), pad (all of it, on
	-- black) or none (sent as it is: the clip takes the photo's shape).
	ADD COLUMN framing text NOT NULL DEFAULT 'crop' CHECK (framing IN ('crop', 'pad', 'none')),
	ALTER COLUMN created_at SET DEFAULT clock_timestamp();
CREATE INDEX video_project_property_idx ON hagen.video_project (workspace_id, property_id)
	WHERE property_id IS NOT NULL;
ALTER TABLE hagen.job DROP CONSTRAINT job_project_check,
	ADD CONSTRAINT job_project_check CHECK (project_id IS NOT NULL OR kind IN ('purge', 'cleanup', 'cancel'));

DROP FUNCTION hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real);
-- Checks the settings of a project (all but its workspace), as
-- create_project and update_project are given them.
CREATE FUNCTION hagen._check_settings(p hagen.video_project) RETURNS void
	LANGUAGE plpgsql STABLE AS $$
BEGIN
	PERFORM hagen._check_choice('aspect ratio', p.aspect_ratio, ARRAY['16:9', '9:16', '1:1']);
	PERFORM hagen._check_choice('provider', p.provider, ARRAY['fal', 'xai']);
	IF p.generate_native_audio IS NULL THEN
		RAISE EXCEPTION 'generate_native_audio must not be null'
			USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass true or false.';
	END IF;
	PERFORM hagen._check_volume('music volume', p.music_volume);
	PERFORM hagen._check_volume('video volume', p.video_volume);
	IF p.metadata IS NULL OR jsonb_typeof(p.metadata) <> 'object' THEN
		RAISE EXCEPTION 'metadata must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass ''{}'' for none.';
	END IF;
	IF p.crossfade IS NULL OR NOT (p.crossfade = 0 OR p.crossfade BETWEEN 0.1 AND 2) THEN
		RAISE EXCEPTION 'invalid crossfade %', coalesce(p.crossfade::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'The crossfade is the length in seconds of the fade at each cut between clips.',
				  HINT = 'Pass 0 for hard cuts, or from 0.1 to 2 seconds (0.5 is a common choice).';
	END IF;
	-- A track of another workspace is not there as far as this one knows.
	IF p.music_track_id IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM hagen.music_track m WHERE m.id = p.music_track_id
					   AND (m.workspace_id IS NULL OR m.workspace_id = p.workspace_id)) THEN
		RAISE EXCEPTION 'music track % does not exist', p.music_track_id
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'Create it with hagen.add_music_track() first, shared or in the project''s workspace.';
	END IF;
	IF length(p.property_id) > 200 OR p.property_id ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid property id "%"', left(p.property_id, 200)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use the app''s id of the property: at most 200 characters, no control characters.';
	END IF;
	PERFORM hagen._check_choice('framing', p.framing, ARRAY['crop', 'pad', 'none']);
END;
$$;

-- Creates a video project and returns its id.
CREATE FUNCTION hagen.create_project(workspace_id text,
									 aspect_ratio text DEFAULT '16:9',
									 provider text DEFAULT 'fal',
									 generate_native_audio boolean DEFAULT false,
									 music_track_id uuid DEFAULT NULL,
									 music_volume real DEFAULT 0.3,
									 video_volume real DEFAULT 1.0,
									 metadata jsonb DEFAULT '{}',
									 crossfade real DEFAULT 0,
									 property_id text DEFAULT NULL,
									 framing text DEFAULT 'crop')
	RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
BEGIN
	IF workspace_id IS NULL OR workspace_id = '' OR workspace_id ~ '[/[:cntrl:]]'
	   OR workspace_id IN ('.', '..') OR length(workspace_id) > 200 THEN
		RAISE EXCEPTION 'invalid workspace id "%"', coalesce(left(workspace_id, 200), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'The workspace id becomes the first segment of every storage key.',
				  HINT = 'Use a non-empty id of at most 200 characters without "/" or control characters.';
	END IF;
	PERFORM hagen._check_workspace(workspace_id);
	p.workspace_id := create_project.workspace_id;
	p.aspect_ratio := create_project.aspect_ratio;
	p.provider := create_project.provider;
	p.generate_native_audio := create_project.generate_native_audio;
	p.music_track_id := create_project.music_track_id;
	p.music_volume := create_project.music_volume;
	p.video_volume := create_project.video_volume;
	p.metadata := create_project.metadata;
	p.crossfade := create_project.crossfade;
	p.property_id := nullif(btrim(create_project.property_id), '');
	p.framing := create_project.framing;
	PERFORM hagen._check_settings(p);

	INSERT INTO hagen.video_project AS v (workspace_id, aspect_ratio, provider,
			generate_native_audio, music_track_id, music_volume, video_volume, metadata, crossfade,
			property_id, framing)
	VALUES (p.workspace_id, p.aspect_ratio, p.provider, p.generate_native_audio, p.music_track_id,
			p.music_volume, p.video_volume, p.metadata, p.crossfade, p.property_id, p.framing)
	RETURNING v.id INTO p.id;
	RETURN p.id;
END;
$$;


-- Refuses to change a project while work of it runs: a run, or the steps
-- a canceled run still has in flight.
CREATE FUNCTION hagen._check_idle(p hagen.video_project, what text) RETURNS void
	LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF p.status IN ('generating', 'compiling') THEN
		RAISE EXCEPTION 'cannot % video project % while it is %', what, p.id, p.status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Wait until it has finished, or cancel it with hagen.cancel_video() first.';
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.job j WHERE j.project_id = p.id AND j.status IN ('queued', 'running')
			   AND j.kind IN ('clip', 'transition', 'compile', 'upload_part')) THEN
		RAISE EXCEPTION 'cannot % video project %: its canceled run is still stopping', what, p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'The steps it had in flight end within a minute or two; try again then.';
	END IF;
END;
$$;

-- A finished project whose video no longer matches its clips or settings
-- goes back to pending, so that start_video makes it again (generating
-- only the clips it lacks).  Its last video stays where it is until then.
CREATE FUNCTION hagen._reopen(project uuid) RETURNS void
	LANGUAGE sql AS $$
	UPDATE hagen.video_project v
	SET status = 'pending', completed_at = NULL,
		progress = '{"step": "created", "label": "Created", "percent": 0}'
	WHERE v.id = project AND v.status IN ('completed', 'failed', 'canceled');
$$;

-- Which clip follows which in a project: {clip id: next clip id or null}.
CREATE FUNCTION hagen._successors(project uuid) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN (SELECT coalesce(jsonb_object_agg(s.id, s.next), '{}')
			FROM (SELECT c.id, lead(c.id) OVER (ORDER BY c.sequence_order) AS next
				  FROM hagen.video_clip c WHERE c.project_id = project) AS s);

-- Puts a project's clips in the order given (every clip of the project,
-- once), numbered 0, 1, 2, ...; a transition whose next clip is no longer
-- the one it was made for is made again; the counts are updated.  before
-- is _successors() as it was before the change.
CREATE FUNCTION hagen._reorder(project uuid, ids uuid[], before jsonb) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	n integer := coalesce(cardinality(ids), 0);
	free integer;
	after jsonb;
BEGIN
	IF n > 0 THEN
		-- sequence_order is unique per project and checked row by row, so
		-- the clips go through a block of numbers no clip holds (of the n + 1
		-- blocks of n numbers above n - 1, one at least is free) on their way.
		SELECT k INTO free FROM generate_series(1, n + 1) AS k
		WHERE NOT EXISTS (SELECT 1 FROM hagen.video_clip c WHERE c.project_id = project
						  AND c.sequence_order >= k * n AND c.sequence_order < k * n + n)
		ORDER BY k LIMIT 1;
		UPDATE hagen.video_clip c SET sequence_order = free * n + x.pos - 1
		FROM unnest(ids) WITH ORDINALITY AS x(id, pos) WHERE c.id = x.id;
		UPDATE hagen.video_clip c SET sequence_order = x.pos - 1
		FROM unnest(ids) WITH ORDINALITY AS x(id, pos) WHERE c.id = x.id;
	END IF;
	after := hagen._successors(project);
	UPDATE hagen.video_clip c SET transition_status = NULL, transition_clip_url = NULL
	WHERE c.project_id = project AND c.transition_status IS NOT NULL
	  AND before -> (c.id::text) IS DISTINCT FROM after -> (c.id::text);
	UPDATE hagen.video_project v
	SET clip_count = s.n, completed_clips = s.ok, failed_clips = s.bad
	FROM (SELECT count(*) AS n, count(*) FILTER (WHERE status = 'completed') AS ok,
				 count(*) FILTER (WHERE status IN ('failed', 'canceled')) AS bad
		  FROM hagen.video_clip WHERE project_id = project) AS s
	WHERE v.id = project;
END;
$$;

-- The clip of an id, checked like a project: it exists and the session's
-- role may use its workspace.
CREATE FUNCTION hagen._clip(clip uuid) RETURNS hagen.video_clip
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	c hagen.video_clip;
BEGIN
	IF clip IS NULL THEN
		RAISE EXCEPTION 'clip id must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the uuid returned by hagen.add_clip().';
	END IF;
	SELECT * INTO c FROM hagen.video_clip WHERE id = clip;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'video clip % does not exist', clip
			USING ERRCODE = 'undefined_object',
				  HINT = 'Use the uuid returned by hagen.add_clip(); hagen.video_status() lists a project''s clips.';
	END IF;
	PERFORM hagen._project(c.project_id);
	RETURN c;
END;
$$;

-- Changes the settings of a project while nothing of it runs.  NULL leaves
-- a setting as it is; remove_music takes the music away; property_id ''
-- clears it.  A new aspect ratio or framing makes every clip and transition
-- again at the next run (they have the old shape), a change of native
-- audio every clip; a finished project whose video changes goes back to
-- pending.  Returns the project's status and the settings that changed.
CREATE FUNCTION hagen.update_project(project_id uuid,
									 aspect_ratio text DEFAULT NULL,
									 provider text DEFAULT NULL,
									 generate_native_audio boolean DEFAULT NULL,
									 music_track_id uuid DEFAULT NULL,
									 music_volume real DEFAULT NULL,
									 video_volume real DEFAULT NULL,
									 metadata jsonb DEFAULT NULL,
									 crossfade real DEFAULT NULL,
									 property_id text DEFAULT NULL,
									 framing text DEFAULT NULL,
									 remove_music boolean DEFAULT false)
	RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	old hagen.video_project := hagen._project(project_id);
	p hagen.video_project;
	changed text[];
BEGIN
	SELECT * INTO old FROM hagen.video_project v WHERE v.id = old.id FOR UPDATE;
	PERFORM hagen._check_idle(old, 'change');
	IF music_track_id IS NOT NULL AND coalesce(remove_music, false) THEN
		RAISE EXCEPTION 'music_track_id and remove_music contradict each other'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass a music_track_id to change the music, or remove_music => true to have none.';
	END IF;
	p := old;
	p.aspect_ratio := coalesce(update_project.aspect_ratio, p.aspect_ratio);
	p.provider := coalesce(update_project.provider, p.provider);
	p.generate_native_audio := coalesce(update_project.generate_native_audio, p.generate_native_audio);
	p.music_track_id := CASE WHEN coalesce(remove_music, false) THEN NULL
							 ELSE coalesce(update_project.music_track_id, p.music_track_id) END;
	p.music_volume := coalesce(update_project.music_volume, p.music_volume);
	p.video_volume := coalesce(update_project.video_volume, p.video_volume);
	p.metadata := coalesce(update_project.metadata, p.metadata);
	p.crossfade := coalesce(update_project.crossfade, p.crossfade);
	p.property_id := CASE WHEN update_project.property_id IS NULL THEN p.property_id
						  ELSE nullif(btrim(update_project.property_id), '') END;
	p.framing := coalesce(update_project.framing, p.framing);
	PERFORM hagen._check_settings(p);

	SELECT array_agg(k ORDER BY k) INTO changed
	FROM jsonb_each(to_jsonb(p)) AS n(k, v)
	WHERE v IS DISTINCT FROM to_jsonb(old) -> k;
	IF changed IS NULL THEN
		RETURN hagen.video_status(old.id) || '{"changed": []}';
	END IF;
	UPDATE hagen.video_project v
	SET aspect_ratio = p.aspect_ratio, provider = p.provider,
		generate_native_audio = p.generate_native_audio, music_track_id = p.music_track_id,
		music_volume = p.music_volume, video_volume = p.video_volume, metadata = p.metadata,
		crossfade = p.crossfade, property_id = p.property_id, framing = p.framing
	WHERE v.id = p.id;
	IF changed && ARRAY['aspect_ratio', 'framing', 'generate_native_audio'] THEN
		UPDATE hagen.video_clip c SET status = 'pending', clip_url = NULL, error_message = NULL
		WHERE c.project_id = p.id AND c.status <> 'pending';
	END IF;
	IF changed && ARRAY['aspect_ratio', 'framing'] THEN
		UPDATE hagen.video_clip c SET transition_status = NULL, transition_clip_url = NULL
		WHERE c.project_id = p.id AND c.transition_status IS NOT NULL;
	END IF;
	IF changed && ARRAY['aspect_ratio', 'framing', 'generate_native_audio', 'provider',
						'music_track_id', 'music_volume', 'video_volume', 'crossfade'] THEN
		PERFORM hagen._reorder(p.id, NULL, hagen._successors(p.id));	-- the counts
		PERFORM hagen._reopen(p.id);
	END IF;
	PERFORM hagen._log(NULL, p.id, 'info', 'settings changed: ' || array_to_string(changed, ', '));
	RETURN hagen.video_status(p.id) || jsonb_build_object('changed', to_jsonb(changed));
END;
$$;

-- Removes a clip from a project while nothing of it runs; the clips after
-- it move up one place.  Returns the project's status.
CREATE FUNCTION hagen.remove_clip(clip_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	c hagen.video_clip := hagen._clip(clip_id);
	p hagen.video_project;
	before jsonb;
	ids uuid[];
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = c.project_id FOR UPDATE;
	PERFORM hagen._check_idle(p, 'remove a clip from');
	before := hagen._successors(p.id);
	DELETE FROM hagen.video_clip v WHERE v.id = c.id;
	SELECT array_agg(v.id ORDER BY v.sequence_order) INTO ids
	FROM hagen.video_clip v WHERE v.project_id = p.id;
	PERFORM hagen._reorder(p.id, ids, before);
	PERFORM hagen._reopen(p.id);
	PERFORM hagen._log(NULL, p.id, 'info', format('clip %s removed from position %s', c.id, c.sequence_order));
	RETURN hagen.video_status(p.id);
END;
$$;

-- Moves a clip to a position (0 is the first) while nothing of its project
-- runs; the clips between shift by one.  Returns the project's status.
CREATE FUNCTION hagen.move_clip(clip_id uuid, "position" integer) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	c hagen.video_clip := hagen._clip(clip_id);
	p hagen.video_project;
	ids uuid[];
	n integer;
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = c.project_id FOR UPDATE;
	PERFORM hagen._check_idle(p, 'move a clip of');
	SELECT array_agg(v.id ORDER BY v.sequence_order) INTO ids
	FROM hagen.video_clip v WHERE v.project_id = p.id AND v.id <> c.id;
	n := coalesce(cardinality(ids), 0) + 1;
	IF "position" IS NULL OR "position" < 0 OR "position" >= n THEN
		RAISE EXCEPTION 'position % is not in video project %, which has % clip%', coalesce("position"::text, 'NULL'),
			p.id, n, CASE WHEN n = 1 THEN '' ELSE 's' END
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Positions count from 0: pass 0 to %s.', n - 1);
	END IF;
	PERFORM hagen._reorder(p.id, coalesce(ids[1:"position"], '{}') || c.id || coalesce(ids["position" + 1:], '{}'),
						   hagen._successors(p.id));
	PERFORM hagen._reopen(p.id);
	PERFORM hagen._log(NULL, p.id, 'info', format('clip %s moved to position %s', c.id, "position"));
	RETURN hagen.video_status(p.id);
END;
$$;

-- Deletes a project: what runs is stopped (requests at the provider get a
-- cancel, which outlives the project), its rows go, and every object it
-- stored is deleted from the bucket in the background.
CREATE FUNCTION hagen.delete_project(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
	j hagen.job;
	cancels integer := 0;
	purge bigint;
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	FOR j IN SELECT * FROM hagen.job q WHERE q.project_id = p.id AND q.status IN ('queued', 'running')
			   AND q.kind IN ('clip', 'transition') AND q.request_id IS NOT NULL
			   AND q.step IN ('submit', 'poll', 'result')
			 ORDER BY q.id
	LOOP
		PERFORM hagen._enqueue(NULL, NULL, 'cancel', j.provider, 'cancel',
			jsonb_build_object('request_id', j.request_id, 'model', j.state ->> 'model',
							   'cancel_url', j.state ->> 'cancel_url', 'deleted_project', p.id));
		cancels := cancels + 1;
	END LOOP;
	DELETE FROM hagen.video_project v WHERE v.id = p.id;
	SELECT q.id INTO purge FROM hagen.job q
	WHERE q.kind = 'purge' AND q.status IN ('queued', 'running') AND q.state ->> 'project_id' = p.id::text
	ORDER BY q.id DESC LIMIT 1;
	PERFORM hagen._log(purge, NULL, 'info', format('video project %s of workspace %s deleted', p.id, p.workspace_id),
					   jsonb_build_object('provider_cancels', cancels, 'status', p.status));
	RETURN jsonb_build_object('project_id', p.id, 'workspace_id', p.workspace_id, 'deleted', true,
							  'was', p.status, 'provider_cancels', cancels, 'purge_job_id', purge);
END;
$$;

-- The projects of a workspace, newest first, lim at a time; the next page
-- starts before the created_at of the last one.
CREATE FUNCTION hagen.list_projects(workspace_id text, lim integer DEFAULT 50,
									before timestamptz DEFAULT NULL)
	RETURNS TABLE (project_id uuid, property_id text, status text, progress jsonb,
				   aspect_ratio text, provider text, clip_count integer, completed_clips integer,
				   failed_clips integer, duration real, thumbnail_url text, final_video_url text,
				   estimated_cost_cents integer, actual_cost_cents integer, error_message text,
				   metadata jsonb, created_at timestamptz, updated_at timestamptz,
				   completed_at timestamptz)
	LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF list_projects.workspace_id IS NULL OR list_projects.workspace_id = '' THEN
		RAISE EXCEPTION 'workspace id must not be empty'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the workspace whose projects to list.';
	END IF;
	PERFORM hagen._check_workspace(list_projects.workspace_id);
	IF lim IS NULL OR lim < 1 OR lim > 1000 THEN
		RAISE EXCEPTION 'invalid limit %', coalesce(lim::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'List from 1 to 1000 projects at a time; page on with before => the created_at of the last.';
	END IF;
	RETURN QUERY
	SELECT v.id, v.property_id, v.status, v.progress, v.aspect_ratio, v.provider, v.clip_count,
		   v.completed_clips, v.failed_clips, v.duration, v.thumbnail_url, v.final_video_url,
		   v.estimated_cost_cents, v.actual_cost_cents, v.error_message, v.metadata, v.created_at,
		   v.updated_at, v.completed_at
	FROM hagen.video_project v
	WHERE v.workspace_id = list_projects.workspace_id
	  AND (list_projects.before IS NULL OR v.created_at < list_projects.before)
	ORDER BY v.created_at DESC, v.id DESC
	LIMIT lim;
END;
$$;

REVOKE ALL ON FUNCTION hagen._check_settings(hagen.video_project),
	hagen._check_idle(hagen.video_project, text), hagen._reopen(uuid), hagen._successors(uuid),
	hagen._reorder(uuid, uuid[], jsonb), hagen._clip(uuid),
	hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real, text, text),
	hagen.update_project(uuid, text, text, boolean, uuid, real, real, jsonb, real, text, text, boolean),
	hagen.remove_clip(uuid), hagen.move_clip(uuid, integer), hagen.delete_project(uuid),
	hagen.list_projects(text, integer, timestamptz) FROM PUBLIC;
ALTER FUNCTION hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real, text, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.update_project(uuid, text, text, boolean, uuid, real, real, jsonb, real, text, text, boolean)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.remove_clip(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.move_clip(uuid, integer) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.delete_project(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.list_projects(text, integer, timestamptz)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
GRANT EXECUTE ON FUNCTION
	hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real, text, text),
	hagen.update_project(uuid, text, text, boolean, uuid, real, real, jsonb, real, text, text, boolean),
	hagen.remove_clip(uuid), hagen.move_clip(uuid, integer), hagen.delete_project(uuid),
	hagen.list_projects(text, integer, timestamptz)
TO hagen_user;

-- ---------------------------------------------------------------------
-- 0.4: models as data (hagen.video_model replaces hagen.pricing): each
-- model's input field names, clip lengths, image limits and prices; the
-- request built from them; a model without a row refused; xAI's charge
-- from usage.cost_in_usd_ticks; a run's estimate only what it generates.
DROP FUNCTION hagen._cost_cents(text, text, numeric, boolean);
DROP FUNCTION hagen._fal_input(jsonb);
DROP TABLE hagen.pricing;
-- A provider's image-to-video model at one output resolution: the names
-- of the input fields it takes (NULL: it takes no such input), the clip
-- lengths it makes, the largest image it should be sent, and its price in
-- cents per generated second, without and with sound (NULL: it makes
-- none).  The request of a clip is built from these names, and a model
-- with no row here is refused by start_video.  Operators may add rows.
-- A model whose resolution is chosen by a setting (xAI: resolution_field,
-- hagen.xai_resolution) has a row per resolution; any other has one row.
CREATE TABLE hagen.video_model (
	provider				text NOT NULL CHECK (provider IN ('fal', 'xai')),
	model					text NOT NULL CHECK (model <> ''),
	resolution				text NOT NULL CHECK (resolution ~ '^[1-9][0-9]*p$'),
	start_image_field		text NOT NULL,
	end_image_field			text,
	audio_field				text,
	cfg_scale_field			text,
	aspect_ratio_field		text,
	resolution_field		text,
	negative_prompt_field	text,
	durations				integer[] NOT NULL
		CHECK (cardinality(durations) > 0 AND 0 < ALL (durations) AND array_position(durations, NULL) IS NULL),
	max_image_side			integer NOT NULL CHECK (max_image_side BETWEEN 300 AND 8192),
	max_image_bytes			integer NOT NULL CHECK (max_image_bytes > 0),
	cents_per_second		numeric NOT NULL CHECK (cents_per_second >= 0),
	cents_per_second_audio	numeric CHECK (cents_per_second_audio >= 0),
	PRIMARY KEY (provider, model, resolution),
	CONSTRAINT video_model_fields_check CHECK (concat_ws(',', start_image_field, end_image_field,
		audio_field, cfg_scale_field, aspect_ratio_field, resolution_field, negative_prompt_field)
		~ '^[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*$'),
	CONSTRAINT video_model_audio_check CHECK ((audio_field IS NULL) = (cents_per_second_audio IS NULL))
);
CREATE UNIQUE INDEX video_model_one_resolution ON hagen.video_model (provider, model)
	WHERE resolution_field IS NULL;
-- Prices from the providers' pages (../shared/specs/): Kling v2.6 pro $0.07/s
-- silent, $0.14/s with sound; v2.5-turbo pro $0.35 per 5 s + $0.07/s; v2.1
-- pro $0.49 per 5 s + $0.098/s; grok-imagine-video $0.05/s at 480p, $0.07/s
-- at 720p, sound included.  Image limits: Kling takes at most 10 MB; the
-- sides are ours (the clips are at most 1080p, a larger photo only costs
-- upload time).
INSERT INTO hagen.video_model VALUES
	('fal', 'fal-ai/kling-video/v2.6/pro/image-to-video', '1080p', 'start_image_url', 'end_image_url',
	 'generate_audio', NULL, NULL, NULL, 'negative_prompt', '{5,10}', 1920, 10485760, 7, 14),
	('fal', 'fal-ai/kling-video/v2.5-turbo/pro/image-to-video', '1080p', 'image_url', 'tail_image_url',
	 NULL, 'cfg_scale', NULL, NULL, 'negative_prompt', '{5,10}', 1920, 10485760, 7, NULL),
	('fal', 'fal-ai/kling-video/v2.1/pro/image-to-video', '1080p', 'image_url', 'tail_image_url',
	 NULL, 'cfg_scale', NULL, NULL, 'negative_prompt', '{5,10}', 1920, 10485760, 9.8, NULL),
	('xai', 'grok-imagine-video', '480p', 'image', NULL, 'generate_audio', NULL, 'aspect_ratio',
	 'resolution', NULL, '{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15}', 1920, 10485760, 5, 5),
	('xai', 'grok-imagine-video', '720p', 'image', NULL, 'generate_audio', NULL, 'aspect_ratio',
	 'resolution', NULL, '{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15}', 1920, 10485760, 7, 7);

-- The resolution asked of a provider: xAI's is a setting; Fal's Kling
-- models make one.
CREATE FUNCTION hagen._resolution(provider text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE provider WHEN 'xai' THEN hagen._setting('hagen.xai_resolution', '720p') END;

-- The row of a provider's model (by default the one it uses now) at the
-- resolution asked of it; NULL when there is none.
CREATE FUNCTION hagen._video_model(provider text, model text DEFAULT NULL) RETURNS hagen.video_model
	LANGUAGE sql STABLE AS $$
	SELECT m FROM hagen.video_model m
	WHERE m.provider = $1 AND m.model = coalesce($2, hagen._model($1))
	  AND (m.resolution_field IS NULL OR m.resolution = hagen._resolution($1))
	LIMIT 1;
$$;

-- The input field names of a model, by role.
CREATE FUNCTION hagen._model_fields(m hagen.video_model) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN jsonb_strip_nulls(jsonb_build_object('start_image', m.start_image_field,
		'end_image', m.end_image_field, 'audio', m.audio_field, 'cfg_scale', m.cfg_scale_field,
		'aspect_ratio', m.aspect_ratio_field, 'resolution', m.resolution_field,
		'negative_prompt', m.negative_prompt_field));

-- Cents for generating seconds of video on a model, with or without sound.
CREATE FUNCTION hagen._cost_cents(m hagen.video_model, seconds numeric, audio boolean)
	RETURNS integer LANGUAGE sql IMMUTABLE
	RETURN ceil(seconds * CASE WHEN audio AND m.audio_field IS NOT NULL THEN m.cents_per_second_audio
							   ELSE m.cents_per_second END)::integer;

-- The body of a generation request from a job's state, named as its model
-- wants: Fal takes images as URLs and the duration as a string ("5"), xAI
-- an image object and an integer.  Only the fields the model takes are
-- sent (Fal refuses others with a 422); sound is always sent explicitly,
-- since both providers make it by default.
CREATE FUNCTION hagen._model_input(s jsonb, provider text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	f jsonb := coalesce(s -> 'fields', hagen._model_fields(hagen._video_model(provider, s ->> 'model')));
	b jsonb;
BEGIN
	IF f IS NULL THEN
		RAISE EXCEPTION 'model "%" of provider "%" has no row in hagen.video_model', s ->> 'model', provider
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	b := jsonb_build_object(f ->> 'start_image', CASE provider WHEN 'xai'
							THEN jsonb_build_object('url', s ->> 'start_image')
							ELSE to_jsonb(s ->> 'start_image') END,
							'prompt', s ->> 'prompt',
							'duration', CASE provider WHEN 'xai' THEN to_jsonb((s ->> 'duration')::integer)
										ELSE to_jsonb(s ->> 'duration') END);
	IF f ? 'end_image' AND s ->> 'end_image' IS NOT NULL THEN
		b := b || jsonb_build_object(f ->> 'end_image', s ->> 'end_image');
	END IF;
	IF f ? 'negative_prompt' AND s ->> 'negative_prompt' IS NOT NULL THEN
		b := b || jsonb_build_object(f ->> 'negative_prompt', s ->> 'negative_prompt');
	END IF;
	IF f ? 'cfg_scale' THEN
		b := b || jsonb_build_object(f ->> 'cfg_scale', 0.5);
	END IF;
	IF f ? 'aspect_ratio' AND s ->> 'aspect_ratio' IS NOT NULL THEN
		b := b || jsonb_build_object(f ->> 'aspect_ratio', s ->> 'aspect_ratio');
	END IF;
	IF f ? 'resolution' THEN
		b := b || jsonb_build_object(f ->> 'resolution', coalesce(s ->> 'resolution', hagen._resolution(provider)));
	END IF;
	IF f ? 'audio' THEN
		b := b || jsonb_build_object(f ->> 'audio', coalesce((s ->> 'audio')::boolean, false));
	END IF;
	RETURN b;
END;
$$;

-- Refuses a run the provider's model cannot make: a model without a row
-- (its fields and price unknown), sound asked of a silent model, a clip
-- length the model does not make.
CREATE FUNCTION hagen._check_model(p hagen.video_project) RETURNS hagen.video_model
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	m hagen.video_model := hagen._video_model(p.provider);
	bad record;
BEGIN
	IF m.model IS NULL THEN
		RAISE EXCEPTION 'model "%" of provider "%" has no row in hagen.video_model%', hagen._model(p.provider),
			p.provider, coalesce(' at ' || hagen._resolution(p.provider), '')
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'hagenkit builds the request from the row''s field names and estimates the cost from its price.',
				  HINT = format('Set %s to one of: %s; or have an operator add a row for it.',
								CASE p.provider WHEN 'fal' THEN 'hagen.fal_video_model' ELSE 'hagen.xai_video_model' END,
								coalesce((SELECT string_agg(DISTINCT v.model || coalesce(' (' || v.resolution || ')', ''), ', ')
										  FROM hagen.video_model v WHERE v.provider = p.provider), 'none'));
	END IF;
	IF p.generate_native_audio AND m.audio_field IS NULL THEN
		RAISE EXCEPTION 'model "%" makes no sound, and video project % asks for native audio', m.model, p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Turn generate_native_audio off with hagen.update_project(), or use a model that makes sound.';
	END IF;
	SELECT c.sequence_order, c.duration INTO bad FROM hagen.video_clip c
	WHERE c.project_id = p.id AND c.status <> 'completed' AND NOT c.duration::integer = ANY (m.durations)
	ORDER BY c.sequence_order LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'clip % of video project % lasts % s, which model "%" does not make', bad.sequence_order,
			p.id, bad.duration, m.model
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Its clips last %s seconds.', array_to_string(m.durations, ', '));
	END IF;
	RETURN m;
END;
$$;

-- The cost of what a run of the project has to generate now: its clips
-- not completed and its seamless transitions (to a next clip) not
-- completed, at the price of the provider's model.
CREATE FUNCTION hagen._run_cost_cents(p hagen.video_project) RETURNS integer
	LANGUAGE sql STABLE AS $$
	SELECT (coalesce(sum(hagen._cost_cents(m, c.duration::numeric, p.generate_native_audio))
						  FILTER (WHERE c.status <> 'completed'), 0)
		   + coalesce(sum(hagen._cost_cents(m, 5, false))
						  FILTER (WHERE c.transition_type = 'seamless' AND c.has_next
								  AND c.transition_status IS DISTINCT FROM 'completed'), 0))::integer
	FROM (SELECT c.*, lead(c.id) OVER (ORDER BY c.sequence_order) IS NOT NULL AS has_next
		  FROM hagen.video_clip c WHERE c.project_id = p.id) AS c,
		 hagen._video_model(p.provider) AS m;
$$;

-- The estimated cost of a project: what its clips and transitions cost so
-- far plus what a run has to generate now.
CREATE OR REPLACE FUNCTION hagen._estimate_cents(p hagen.video_project) RETURNS integer
	LANGUAGE sql STABLE
	RETURN (SELECT coalesce(sum(c.cost_cents), 0) FROM hagen.video_clip c WHERE c.project_id = p.id)
		   + hagen._run_cost_cents(p);

-- Queues a generation job for every clip and seamless transition of a
-- project that is not completed and has no live job.  Returns how many.
CREATE OR REPLACE FUNCTION hagen._enqueue_generation(p hagen.video_project) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	c record;
	n integer := 0;
	m hagen.video_model := hagen._video_model(p.provider);
	time_limit interval := hagen._setting_interval('hagen.clip_timeout', '20 minutes');
	common jsonb;
	first_step text := hagen._first_step(p.provider, p.framing);
BEGIN
	common := jsonb_build_object('model', m.model, 'resolution', m.resolution,
								 'fields', hagen._model_fields(m), 'aspect_ratio', p.aspect_ratio,
								 'negative_prompt', hagen._negative_prompt(),
								 'framing', p.framing, 'image_route', hagen._image_route(p.provider),
								 'max_image_side', m.max_image_side, 'max_image_bytes', m.max_image_bytes);
	FOR c IN
		SELECT v.*, lead(v.source_image_url) OVER w AS next_source, lead(v.id) OVER w AS next_id
		FROM hagen.video_clip v WHERE v.project_id = p.id
		WINDOW w AS (ORDER BY v.sequence_order)
		ORDER BY v.sequence_order
	LOOP
		IF c.status <> 'completed' THEN
			IF hagen._enqueue(p.id, c.id, 'clip', p.provider, first_step, common || jsonb_build_object(
					'start_image', c.source_image_url,
					'end_image', coalesce(c.end_image_url, c.source_image_url),
					'images', hagen._fal_image_steps(ARRAY[c.source_image_url,
						CASE WHEN m.end_image_field IS NOT NULL THEN c.end_image_url END]),
					'prompt', hagen._clip_prompt((SELECT v FROM hagen.video_clip v WHERE v.id = c.id), p),
					'duration', c.duration::integer,
					'audio', p.generate_native_audio,
					'key', hagen.get_video_path(p.workspace_id, p.id, c.id || '.mp4'),
					'file', hagen._work_file(p.id, c.id || '.mp4'),
					'cost_cents', hagen._cost_cents(m, c.duration::numeric, p.generate_native_audio)),
					'http', time_limit) IS NOT NULL THEN
				n := n + 1;
			END IF;
			UPDATE hagen.video_clip SET status = 'processing', error_message = NULL
			WHERE id = c.id;
		END IF;
		IF c.transition_type = 'seamless' AND c.next_id IS NOT NULL
		   AND c.transition_status IS DISTINCT FROM 'completed' THEN
			IF hagen._enqueue(p.id, c.id, 'transition', p.provider, first_step, common || jsonb_build_object(
					'start_image', coalesce(c.end_image_url, c.source_image_url),
					'end_image', c.next_source,
					'images', hagen._fal_image_steps(ARRAY[coalesce(c.end_image_url, c.source_image_url),
						CASE WHEN m.end_image_field IS NOT NULL THEN c.next_source END]),
					'next_clip_id', c.next_id,
					'prompt', hagen._transition_prompt((SELECT v FROM hagen.video_clip v WHERE v.id = c.id),
													   (SELECT v FROM hagen.video_clip v WHERE v.id = c.next_id)),
					'duration', 5,
					'audio', false,
					'key', hagen.get_video_path(p.workspace_id, p.id, 'transition_' || c.id || '.mp4'),
					'file', hagen._work_file(p.id, 'transition_' || c.id || '.mp4'),
					'cost_cents', hagen._cost_cents(m, 5, false)),
					'http', time_limit) IS NOT NULL THEN
				n := n + 1;
			END IF;
			UPDATE hagen.video_clip SET transition_status = 'processing' WHERE id = c.id;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

-- Checks what a run needs before anything is queued: clips, credentials for
-- the provider and for storage.
CREATE OR REPLACE FUNCTION hagen._check_runnable(p hagen.video_project) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM hagen.video_clip c WHERE c.project_id = p.id) THEN
		RAISE EXCEPTION 'video project % has no clips', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add clips with hagen.add_clip() before starting it.';
	END IF;
	IF NOT hagen.provider_configured(p.provider) THEN
		RAISE EXCEPTION 'no API key is configured for provider "%"', p.provider
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = CASE p.provider
					WHEN 'fal' THEN 'Set hagen.fal_key in postgresql.conf (or FAL_KEY in the server''s environment) and reload.'
					ELSE 'Set hagen.xai_key in postgresql.conf (or XAI_API_KEY in the server''s environment) and reload.' END;
	END IF;
	PERFORM hagen._check_model(p);
	PERFORM hagen._s3_url('probe');
	IF NOT hagen.provider_configured('s3') THEN
		RAISE EXCEPTION 'no storage credentials are configured'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Set hagen.s3_access_key_id and hagen.s3_secret_access_key (or R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY) and reload.';
	END IF;
END;
$$;

-- Starts (or resumes) a run of a locked project: queues what is missing and
-- moves it to generating.  Returns the status with the number of new jobs
-- and the estimated cost of what they generate.
CREATE OR REPLACE FUNCTION hagen._begin_run(p hagen.video_project) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	n integer;
	run_cost integer;
BEGIN
	PERFORM hagen._check_runnable(p);
	run_cost := hagen._run_cost_cents(p);
	PERFORM hagen._check_budget(p, run_cost);
	PERFORM hagen._cancel_cleanup(p.id);
	UPDATE hagen.video_project v
	SET status = 'generating', started_at = now(), completed_at = NULL, error_message = NULL,
		final_video_url = NULL, thumbnail_url = NULL, duration = NULL,
		progress = '{"step": "generating", "label": "Generating clips", "percent": 0}'
	WHERE v.id = p.id
	RETURNING * INTO p;
	n := hagen._enqueue_generation(p);
	UPDATE hagen.video_project v SET estimated_cost_cents = hagen._estimate_cents(p)
	WHERE v.id = p.id;
	PERFORM hagen._log(NULL, p.id, 'info', 'run started',
					   jsonb_build_object('jobs', n, 'run_cost_cents', run_cost));
	PERFORM hagen._advance_project(p.id);
	RETURN hagen.video_status(p.id) || jsonb_build_object('enqueued_jobs', n, 'run_cost_cents', run_cost);
END;
$$;

CREATE OR REPLACE FUNCTION hagen._fal_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := hagen._fal_request_url(j.state ->> 'model', coalesce(j.request_id, ''));
	url text;
BEGIN
	IF j.step LIKE 'image\_%' THEN
		RETURN hagen._fal_upload_effect(j);
	END IF;
	CASE j.step
	WHEN 'submit' THEN
		RETURN hagen._http('POST', rtrim(hagen._setting('hagen.fal_queue_url', 'https://queue.fal.run'), '/')
				|| '/' || (j.state ->> 'model'), 'fal', 'request',
			jsonb_build_object('headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
							   'body', hagen._model_input(j.state, 'fal')));
	WHEN 'poll' THEN
		url := coalesce(j.state ->> 'status_url', base || '/status');
		RETURN hagen._http('GET', url || CASE WHEN url ~ '\?' THEN '&' ELSE '?' END || 'logs=0',
			'fal', 'status', '{"headers": {"accept": "application/json"}}');
	WHEN 'result' THEN
		RETURN hagen._http('GET', coalesce(j.state ->> 'response_url', base), 'fal', 'request',
			'{"headers": {"accept": "application/json"}}');
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai step "%"', j.step;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._xai_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := rtrim(hagen._setting('hagen.xai_url', 'https://api.x.ai/v1'), '/');
BEGIN
	CASE j.step
	WHEN 'submit' THEN
		RETURN hagen._http('POST', base || '/videos/generations', 'xai', 'request', jsonb_build_object(
			'headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
			'body', jsonb_build_object('model', j.state ->> 'model') || hagen._model_input(j.state, 'xai')));
	WHEN 'poll', 'result' THEN
		RETURN hagen._http('GET', base || '/videos/' || hagen._uri_encode(j.request_id, false), 'xai',
			'status', '{"headers": {"accept": "application/json"}}');
	END CASE;
	RAISE EXCEPTION 'unknown xAI step "%"', j.step;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._xai_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	b jsonb := o -> 'body';
	st text;
	poll_ms bigint := hagen._poll_delay_ms(j);
	msg text := hagen._error_text(o);
BEGIN
	IF j.step = 'submit' THEN
		IF status = 200 AND jsonb_typeof(b -> 'request_id') = 'string' AND b ->> 'request_id' <> '' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'delay_ms', poll_ms,
				'request_id', b ->> 'request_id',
				'log', format('submitted to xAI as request %s', b ->> 'request_id'),
				'state', jsonb_build_object('request_id', b ->> 'request_id'));
		ELSIF status IN (429, 503) OR (status = 0 AND o ->> 'phase' = 'connect') THEN
			RETURN hagen._transient(o, 'submit to xAI');
		ELSIF status BETWEEN 400 AND 499 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('xAI refused the request (HTTP %s): %s', status, coalesce(msg, 'no detail')));
		END IF;
		RETURN jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to xAI unconfirmed: %s. The request may have reached xAI and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
								 ELSE format('HTTP %s%s', status, coalesce(': ' || msg, '')) END));
	END IF;

	-- poll (and result, which is the same request)
	IF status = 202 THEN
		RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'delay_ms', poll_ms,
			'state', jsonb_strip_nulls(jsonb_build_object('provider_status', 'pending',
				'provider_progress', b -> 'progress',
				'polls', coalesce((j.state ->> 'polls')::integer, 0) + 1)));
	ELSIF status = 404 THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('xAI does not know request %s (HTTP 404)', j.request_id));
	ELSIF status <> 200 THEN
		RETURN coalesce(hagen._transient(o, 'xAI status'),
			jsonb_build_object('action', 'fail',
				'error', format('xAI status of request %s failed (HTTP %s): %s', j.request_id, status,
								coalesce(msg, 'no detail'))));
	ELSIF jsonb_typeof(b) <> 'object' THEN
		RETURN jsonb_build_object('action', 'retry',
			'error', 'xAI answered with a body that is not a JSON object');
	END IF;
	st := coalesce(b ->> 'status', CASE WHEN b -> 'video' ->> 'url' <> '' THEN 'done' END, 'pending');
	IF st = 'done' THEN
		IF (b -> 'video' ->> 'respect_moderation')::boolean IS FALSE THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', 'xAI blocked the video by content moderation');
		ELSIF coalesce(b -> 'video' ->> 'url', '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error', 'xAI result has no video.url');
		END IF;
		-- What xAI charged, when it says (1 USD = 10^10 ticks, 1 cent = 10^8).
		RETURN jsonb_build_object('action', 'advance', 'step', 'download',
			'state', jsonb_strip_nulls(jsonb_build_object('video_url', b -> 'video' ->> 'url',
				'provider_duration', b -> 'video' -> 'duration',
				'actual_cost_cents', CASE WHEN b -> 'usage' ->> 'cost_in_usd_ticks' ~ '^[0-9]+$'
										  THEN ceil((b -> 'usage' ->> 'cost_in_usd_ticks')::numeric / 1e8)::integer END)));
	ELSIF st = 'failed' THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('xAI could not generate the video (%s): %s',
							coalesce(b -> 'error' ->> 'code', 'failed'),
							coalesce(b -> 'error' ->> 'message', 'no detail')));
	ELSIF st = 'expired' THEN
		RETURN jsonb_build_object('action', 'fail', 'error', format('xAI request %s expired', j.request_id));
	END IF;
	RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'delay_ms', poll_ms,
		'state', jsonb_build_object('provider_status', st));
END;
$$;

-- Reads the outcome of the current step of a clip or transition job.
CREATE OR REPLACE FUNCTION hagen._generation_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	-- An HTTP status (an image effect's outcome says "ok" or "error" instead).
	status integer := CASE WHEN o ->> 'status' ~ '^[0-9]{1,4}$' THEN (o ->> 'status')::integer ELSE 0 END;
	d jsonb;
BEGIN
	CASE j.step
	WHEN 'image_fetch', 'image_frame', 'image_store' THEN
		RETURN hagen._image_step_interpret(j, o);
	WHEN 'image_initiate', 'image_put', 'submit', 'poll', 'result' THEN
		CASE j.provider
		WHEN 'fal' THEN RETURN hagen._fal_interpret(j, o);
		WHEN 'xai' THEN RETURN hagen._xai_interpret(j, o);
		END CASE;
	WHEN 'download' THEN
		IF o ->> 'error_kind' = 'guard' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('refused to download %s: %s', j.state ->> 'video_url', o ->> 'error'));
		ELSIF o ->> 'error_kind' = 'too_large' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('the video at %s is larger than hagen.max_download_bytes (%s bytes)',
								j.state ->> 'video_url', hagen._max_download_bytes()));
		ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			RETURN jsonb_build_object('action', 'advance',
				'step', hagen._store_step((o ->> 'bytes')::bigint),
				'state', jsonb_build_object('bytes', o -> 'bytes'));
		END IF;
		RETURN coalesce(hagen._transient(o, 'download of the generated video'),
			jsonb_build_object('action', 'fail', 'error',
				format('download of %s failed: HTTP %s%s', j.state ->> 'video_url', status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		d := hagen._upload_interpret(j, o);
		IF d ->> 'action' = 'stored' THEN
			RETURN d || jsonb_build_object('action', 'succeed',
				'cost_cents', coalesce((j.state ->> 'actual_cost_cents')::integer,
									   (j.state ->> 'cost_cents')::integer, 0),
				'state', coalesce(d -> 'state', '{}') || jsonb_build_object('url', hagen._stored_url(j.state ->> 'key')));
		END IF;
		RETURN d;
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a % job', j.step, j.kind;
END;
$$;

REVOKE ALL ON FUNCTION hagen._resolution(text), hagen._video_model(text, text),
	hagen._model_fields(hagen.video_model), hagen._cost_cents(hagen.video_model, numeric, boolean),
	hagen._model_input(jsonb, text), hagen._check_model(hagen.video_project),
	hagen._run_cost_cents(hagen.video_project) FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON hagen.video_model TO hagen_operator;

-- ---------------------------------------------------------------------
-- 0.4: budgets: hagen.max_clips_per_project and hagen.max_project_cents
-- (settings), a workspace's cents per day, the spending of each day.
-- A workspace's limit of cents per day (UTC days): what it spends plus what
-- its runs in flight are estimated to spend may not pass it.  No row: no
-- limit.  Operators set them.
CREATE TABLE hagen.workspace_budget (
	workspace_id	text PRIMARY KEY CHECK (workspace_id <> ''),
	cents_per_day	integer NOT NULL CHECK (cents_per_day >= 0)
);

-- What each workspace was charged each day (UTC): the cost of every clip
-- and transition generated, added when it is stored.  Kept when projects
-- are deleted, so deleting a project gives no money back.
CREATE TABLE hagen.workspace_spending (
	workspace_id	text NOT NULL,
	day				date NOT NULL,
	cents			bigint NOT NULL DEFAULT 0 CHECK (cents >= 0),
	PRIMARY KEY (workspace_id, day)
);

-- Today, as budgets count days.
CREATE FUNCTION hagen._today() RETURNS date
	LANGUAGE sql STABLE RETURN (now() AT TIME ZONE 'UTC')::date;

-- Adds the cost of a generated clip or transition to its workspace's day.
CREATE FUNCTION hagen._record_spending() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO hagen.workspace_spending AS s (workspace_id, day, cents)
	SELECT p.workspace_id, hagen._today(), NEW.cost_cents
	FROM hagen.video_project p WHERE p.id = NEW.project_id
	ON CONFLICT (workspace_id, day) DO UPDATE SET cents = s.cents + EXCLUDED.cents;
	RETURN NULL;
END;
$$;
CREATE TRIGGER job_spending AFTER UPDATE OF status ON hagen.job
	FOR EACH ROW WHEN (NEW.status = 'succeeded' AND OLD.status <> 'succeeded'
					   AND NEW.kind IN ('clip', 'transition') AND NEW.cost_cents > 0)
	EXECUTE FUNCTION hagen._record_spending();

-- What a workspace has spent today and what its generations in flight are
-- estimated to cost (they are paid for as they complete).
CREATE FUNCTION hagen._spent_today(workspace text) RETURNS bigint
	LANGUAGE sql STABLE
	RETURN coalesce((SELECT s.cents FROM hagen.workspace_spending s
					 WHERE s.workspace_id = workspace AND s.day = hagen._today()), 0)
		 + coalesce((SELECT sum((j.state ->> 'cost_cents')::integer)
					 FROM hagen.job j JOIN hagen.video_project p ON p.id = j.project_id
					 WHERE p.workspace_id = workspace AND j.status IN ('queued', 'running')
					   AND j.kind IN ('clip', 'transition')), 0);

-- Refuses a run of a locked project that would pass a limit: run_cost is
-- what the run generates, the project's estimate what it cost so far plus
-- that.  A limit exactly reached is not passed.  Runs of one workspace are
-- checked one at a time, so two cannot both take the last of its day.
CREATE FUNCTION hagen._check_budget(p hagen.video_project, run_cost integer) RETURNS void
	LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	max_clips integer := coalesce(hagen._setting('hagen.max_clips_per_project')::integer, 20);
	max_cents integer := coalesce(hagen._setting('hagen.max_project_cents')::integer, 0);
	per_day integer;
	clips integer;
	spent bigint;
	estimate integer;
	numbers text;
BEGIN
	SELECT b.cents_per_day INTO per_day FROM hagen.workspace_budget b WHERE b.workspace_id = p.workspace_id;
	IF per_day IS NOT NULL THEN
		PERFORM pg_advisory_xact_lock(hashtextextended('hagen.workspace_budget ' || p.workspace_id, 0));
	END IF;
	SELECT count(*) INTO clips FROM hagen.video_clip c WHERE c.project_id = p.id;
	spent := hagen._spent_today(p.workspace_id);
	estimate := (SELECT coalesce(sum(c.cost_cents), 0) FROM hagen.video_clip c WHERE c.project_id = p.id)
				+ run_cost;
	numbers := format('The run is estimated at %s cents (the project at %s); workspace "%s" has spent %s cents today (UTC)%s.',
					  run_cost, estimate, p.workspace_id, spent,
					  CASE WHEN per_day IS NOT NULL THEN format(' of its %s cents per day', per_day) ELSE '' END);
	IF max_clips > 0 AND clips > max_clips THEN
		RAISE EXCEPTION 'video project % has % clips, more than hagen.max_clips_per_project (%)', p.id, clips, max_clips
			USING ERRCODE = 'program_limit_exceeded', DETAIL = numbers,
				  HINT = format('Remove %s clip%s with hagen.remove_clip(), or ask for a higher limit.',
								clips - max_clips, CASE WHEN clips - max_clips = 1 THEN '' ELSE 's' END);
	END IF;
	IF max_cents > 0 AND estimate > max_cents THEN
		RAISE EXCEPTION 'video project % is estimated at % cents, over hagen.max_project_cents (%); workspace "%" has spent % cents today',
			p.id, estimate, max_cents, p.workspace_id, spent
			USING ERRCODE = 'program_limit_exceeded', DETAIL = numbers,
				  HINT = 'Use fewer or shorter clips, turn native audio off, or ask for a higher limit.';
	END IF;
	IF per_day IS NOT NULL AND spent + run_cost > per_day THEN
		RAISE EXCEPTION 'a run of video project % is estimated at % cents; workspace "%" has spent % of its % cents today',
			p.id, run_cost, p.workspace_id, spent, per_day
			USING ERRCODE = 'program_limit_exceeded', DETAIL = numbers,
				  HINT = format('%s cents are left today (UTC); start it tomorrow, make it smaller, or ask an operator to raise hagen.workspace_budget.',
								greatest(per_day - spent, 0));
	END IF;
END;
$$;

-- A workspace's budget today: its limit (NULL: none), what it has spent,
-- what its runs in flight are estimated to cost, and what is left.
CREATE FUNCTION hagen.workspace_budget_status(workspace_id text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	per_day integer;
	spent bigint;
	committed bigint;
BEGIN
	IF workspace_id IS NULL OR workspace_id = '' THEN
		RAISE EXCEPTION 'workspace id must not be empty'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the workspace whose budget to show.';
	END IF;
	PERFORM hagen._check_workspace(workspace_id);
	SELECT b.cents_per_day INTO per_day FROM hagen.workspace_budget b
	WHERE b.workspace_id = workspace_budget_status.workspace_id;
	SELECT coalesce(sum(s.cents), 0) INTO spent FROM hagen.workspace_spending s
	WHERE s.workspace_id = workspace_budget_status.workspace_id AND s.day = hagen._today();
	committed := hagen._spent_today(workspace_id) - spent;
	RETURN jsonb_build_object('workspace_id', workspace_id, 'day', hagen._today(),
		'cents_per_day', per_day, 'spent_cents', spent, 'in_flight_cents', committed,
		'left_cents', CASE WHEN per_day IS NOT NULL THEN greatest(per_day - spent - committed, 0) END,
		'max_project_cents', nullif(coalesce(hagen._setting('hagen.max_project_cents')::integer, 0), 0),
		'max_clips_per_project', nullif(coalesce(hagen._setting('hagen.max_clips_per_project')::integer, 20), 0));
END;
$$;

REVOKE ALL ON FUNCTION hagen._today(), hagen._record_spending(), hagen._spent_today(text),
	hagen._check_budget(hagen.video_project, integer), hagen.workspace_budget_status(text) FROM PUBLIC;
ALTER FUNCTION hagen.workspace_budget_status(text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
GRANT EXECUTE ON FUNCTION hagen.workspace_budget_status(text) TO hagen_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON hagen.workspace_budget TO hagen_operator;
GRANT SELECT ON hagen.workspace_spending TO hagen_operator;
SELECT pg_catalog.pg_extension_config_dump('hagen.workspace_budget', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.workspace_spending', '');

-- ---------------------------------------------------------------------
-- 0.4: music per tenant: a track belongs to a workspace or (NULL) is shared,
-- under the tenant rules and row-level security; the app's categories; a
-- URL that can never be fetched refused when the track is added.
ALTER TABLE hagen.music_track
	-- The workspace whose track it is; NULL: shared with every workspace.
	ADD COLUMN workspace_id text CHECK (workspace_id <> '');
CREATE INDEX music_track_workspace_idx ON hagen.music_track (workspace_id);

DROP FUNCTION hagen.add_music_track(text, text, text, text, real);
-- Why a URL given by a user can never be fetched: not http(s), or its host
-- an address the network guard refuses (in any spelling) or a name that
-- always means this machine or the metadata service, unless it is the host
-- of a configured endpoint or listed in hagen.trusted_hosts; NULL when it
-- may be fetched (src/url_check.c).
CREATE FUNCTION hagen._url_refusal(url text) RETURNS text
	LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'hagen_url_refusal';

-- The music categories of the app hagenkit replaces.
CREATE FUNCTION hagen._music_categories() RETURNS text[]
	LANGUAGE sql IMMUTABLE RETURN ARRAY['modern', 'classical', 'upbeat', 'calm', 'cinematic'];

-- Is a role limited to some workspaces (listed in hagen.workspace_role)?
CREATE FUNCTION hagen._is_tenant(who name) RETURNS boolean
	LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	RETURN NOT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = who), false)
		AND NOT pg_has_role(who, 'hagen_operator', 'USAGE')
		AND EXISTS (SELECT 1 FROM hagen.workspace_role r JOIN pg_roles g ON g.rolname = r.role_name
					WHERE pg_has_role(who, g.oid, 'USAGE'));

-- Adds a music track and returns its id: a workspace's own, or with no
-- workspace one shared by every workspace (not for tenant roles).  The URL
-- must be one that can be fetched.
CREATE FUNCTION hagen.add_music_track(name text, audio_url text,
									  category text DEFAULT NULL,
									  mood text DEFAULT NULL,
									  duration real DEFAULT NULL,
									  workspace_id text DEFAULT NULL)
	RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	new_id uuid;
	why text;
BEGIN
	IF name IS NULL OR btrim(name) = '' THEN
		RAISE EXCEPTION 'music track name must not be empty'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the track a name.';
	END IF;
	IF workspace_id IS NOT NULL THEN
		IF workspace_id = '' OR workspace_id ~ '[/[:cntrl:]]' OR workspace_id IN ('.', '..')
		   OR length(workspace_id) > 200 THEN
			RAISE EXCEPTION 'invalid workspace id "%"', left(workspace_id, 200)
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Use a non-empty id of at most 200 characters without "/" or control characters, or NULL for a track every workspace may use.';
		END IF;
		PERFORM hagen._check_workspace(workspace_id);
	ELSIF hagen._is_tenant(session_user) THEN
		RAISE EXCEPTION 'role % may not add music shared by every workspace', session_user
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Pass workspace_id => one of its workspaces; shared tracks are added by operators.';
	END IF;
	PERFORM hagen._check_url('music track URL', audio_url);
	why := hagen._url_refusal(audio_url);
	IF why IS NOT NULL THEN
		RAISE EXCEPTION 'music track URL "%" can never be fetched: %', left(audio_url, 200), why
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Music is fetched from public addresses only: put the file on public storage, or have an operator list its host in hagen.trusted_hosts.';
	END IF;
	IF category IS NOT NULL THEN
		PERFORM hagen._check_choice('music category', lower(btrim(category)), hagen._music_categories());
	END IF;
	IF duration IS NOT NULL AND NOT (duration > 0 AND duration < 86400) THEN
		RAISE EXCEPTION 'invalid music track duration %', duration
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give the length in seconds, or NULL when unknown.';
	END IF;
	INSERT INTO hagen.music_track AS m (name, audio_url, category, mood, duration, workspace_id)
	VALUES (add_music_track.name, audio_url, lower(btrim(category)), mood, add_music_track.duration,
			add_music_track.workspace_id)
	RETURNING m.id INTO new_id;
	RETURN new_id;
END;
$$;

REVOKE ALL ON FUNCTION hagen._url_refusal(text), hagen._music_categories(), hagen._is_tenant(name),
	hagen.add_music_track(text, text, text, text, real, text) FROM PUBLIC;
ALTER FUNCTION hagen.add_music_track(text, text, text, text, real, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
GRANT EXECUTE ON FUNCTION hagen.add_music_track(text, text, text, text, real, text) TO hagen_user;
-- Music: the shared tracks and those of the workspaces the role may use.
ALTER TABLE hagen.music_track ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_rows ON hagen.music_track
	USING (workspace_id IS NULL OR hagen._workspace_allowed(workspace_id, current_user));

-- ---------------------------------------------------------------------
-- 0.4: framing: each photo fitted to the project's aspect ratio by
-- hagen-compile (image effects, on the compile lane) before it goes to the
-- provider; fitted photos for xAI (and Fal in url mode) stored in the
-- bucket behind a presigned URL.
DROP FUNCTION hagen._first_step(text);
-- Which workers carry out a step of a job: the compile workers run
-- hagen-compile ("compile" lane), the dispatcher everything else ("http").
-- A job changes lanes as it moves from step to step.
CREATE OR REPLACE FUNCTION hagen._step_lane(kind text, step text) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN kind = 'compile' AND step IN ('compile', 'plan', 'join') THEN 'compile'
				WHEN kind = 'chunk' AND step = 'encode' THEN 'compile'
				WHEN step = 'image_frame' THEN 'compile'
				ELSE 'http' END;

-- An image effect (compile lane): hagen-compile fits the photo in the work
-- file input to an aspect ratio ("9:16") by fit (crop or pad), at most
-- max_side pixels on its longer side and max_bytes as a JPEG, into output.
CREATE FUNCTION hagen._image_effect(input text, output text, aspect text, fit text,
									max_side integer, max_bytes integer) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN jsonb_build_object('type', 'image', 'input', input, 'output', output, 'aspect', aspect,
		'fit', fit, 'max_side', max_side, 'min_side', least(300, max_side), 'max_bytes', max_bytes,
		'timeout_ms', 60000);

-- The first step of a generation job of a project.
CREATE FUNCTION hagen._first_step(provider text, framing text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN framing <> 'none'
				  OR (provider = 'fal' AND hagen._setting('hagen.fal_image_mode', 'upload') = 'upload')
				THEN 'image_fetch' ELSE 'submit' END;

-- How a job's fetched (and fitted) photos reach its provider: 'fal'
-- (Fal storage) or 's3' (the bucket, by a presigned URL).
CREATE FUNCTION hagen._image_route(provider text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN provider = 'fal' AND hagen._setting('hagen.fal_image_mode', 'upload') = 'upload'
				THEN 'fal' ELSE 's3' END;

-- The storage key of a fitted photo: beside the job's video, in the
-- project's prefix.
CREATE FUNCTION hagen._image_key(j hagen.job, i integer) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN regexp_replace(j.state ->> 'key', '[^/]*$', '') || format('image_%s_%s.jpg', j.id, i);

-- The storage key of a photo as it was fetched, when a worker on another
-- host fits it.
CREATE FUNCTION hagen._image_source_key(j hagen.job, i integer) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN regexp_replace(j.state ->> 'key', '[^/]*$', '') || format('image_%s_%s_source', j.id, i);

-- The work file of a fitted photo.
CREATE FUNCTION hagen._image_framed_file(j hagen.job, i integer) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN hagen._work_file(j.project_id, format('images/%s_%s.jpg', j.id, i));

-- The effect of an image step.
CREATE FUNCTION hagen._image_step_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	img jsonb := j.state -> 'images' -> i;
	framed boolean := coalesce(j.state ->> 'framing', 'none') <> 'none';
	eff jsonb;
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		-- A photo that is fitted may be larger than the model takes: it is
		-- written again, smaller.
		RETURN hagen._http('GET', img ->> 'url', 'none', 'image', jsonb_build_object(
			'guard', true, 'follow_redirects', true,
			'save_to', hagen._work_file(j.project_id, format('images/%s_%s', j.id, i)),
			'max_bytes', CASE WHEN framed THEN 50 * 1024 * 1024
							  ELSE coalesce((j.state ->> 'max_image_bytes')::integer, 10 * 1024 * 1024) END));
	WHEN 'image_frame' THEN
		eff := hagen._image_effect(img ->> 'file', hagen._image_framed_file(j, i),
			j.state ->> 'aspect_ratio', j.state ->> 'framing',
			coalesce((j.state ->> 'max_image_side')::integer, 1920),
			coalesce((j.state ->> 'max_image_bytes')::integer, 10 * 1024 * 1024));
		IF NOT hagen._compiles_elsewhere() THEN
			RETURN eff;
		END IF;
		-- For a worker on any host: the compile-lane shape, every file with
		-- its storage key (hagen-compile compile runs a manifest "image").
		RETURN jsonb_build_object('type', 'compile', 'dir', hagen._work_file(j.project_id, 'images'),
			'timeout_ms', eff -> 'timeout_ms',
			'manifest', jsonb_build_object('image', eff - 'type' - 'timeout_ms'),
			'inputs', jsonb_build_array(jsonb_build_object('file', img ->> 'file',
														   'key', hagen._image_source_key(j, i))),
			'outputs', jsonb_build_array(jsonb_build_object('file', hagen._image_framed_file(j, i),
				'key', hagen._image_key(j, i), 'content_type', 'image/jpeg')));
	WHEN 'image_source' THEN
		RETURN hagen._http('PUT', hagen._s3_url(hagen._image_source_key(j, i)), 's3', 'image',
			jsonb_build_object('body_file', img ->> 'file',
							   'headers', jsonb_build_object('content-type', img ->> 'content_type')));
	WHEN 'image_pull' THEN
		RETURN hagen._http('GET', hagen._s3_url(hagen._image_key(j, i)), 's3', 'image',
			jsonb_build_object('save_to', hagen._image_framed_file(j, i)));
	WHEN 'image_store' THEN
		RETURN hagen._http('PUT', hagen._s3_url(hagen._image_key(j, i)), 's3', 'image', jsonb_build_object(
			'body_file', img ->> 'file', 'headers', jsonb_build_object('content-type', img ->> 'content_type')));
	END CASE;
	RAISE EXCEPTION 'unknown image step "%"', j.step;
END;
$$;

-- After the image at image_index has reached the provider as url: the next
-- image, or the submit with the start and end images as the provider sees
-- them.
CREATE FUNCTION hagen._image_done(j hagen.job, url text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	images jsonb := jsonb_set(j.state -> 'images', ARRAY[i::text],
							  (j.state -> 'images' -> i) || jsonb_build_object('file_url', url));
	start_url text;
	end_url text;
BEGIN
	IF i + 1 < jsonb_array_length(images) THEN
		RETURN jsonb_build_object('action', 'advance', 'step', 'image_fetch',
			'state', jsonb_build_object('images', images, 'image_index', i + 1));
	END IF;
	SELECT x ->> 'file_url' INTO start_url FROM jsonb_array_elements(images) x
	WHERE x ->> 'url' = j.state ->> 'start_image';
	SELECT x ->> 'file_url' INTO end_url FROM jsonb_array_elements(images) x
	WHERE x ->> 'url' = j.state ->> 'end_image';
	RETURN jsonb_build_object('action', 'advance', 'step', 'submit',
		'log', format('%s image(s) %s', jsonb_array_length(images),
					  CASE WHEN j.state ->> 'image_route' = 's3' THEN 'stored for the provider'
						   ELSE 'uploaded to Fal storage' END),
		'state', jsonb_build_object('images', images,
									'source_start_image', j.state ->> 'start_image',
									'source_end_image', j.state ->> 'end_image',
									'start_image', start_url, 'end_image', end_url));
END;
$$;

-- Reads the outcome of an image step.
CREATE FUNCTION hagen._image_step_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	-- An HTTP status; an image effect's outcome says "ok" or "error".
	status integer := CASE WHEN o ->> 'status' ~ '^[0-9]{1,4}$' THEN (o ->> 'status')::integer ELSE 0 END;
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	images jsonb := j.state -> 'images';
	img jsonb := images -> i;
	framed boolean := coalesce(j.state ->> 'framing', 'none') <> 'none';
	via_fal boolean := coalesce(j.state ->> 'image_route', hagen._image_route(j.provider)) = 'fal';
	ctype text;
	name text;
	r jsonb := o -> 'result';
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		IF o ->> 'error_kind' = 'guard' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('refused to fetch image %s: %s', img ->> 'url', o ->> 'error'));
		ELSIF o ->> 'error_kind' = 'too_large' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', CASE WHEN framed THEN format('image %s is larger than 50 MB', img ->> 'url')
							  ELSE format('image %s is larger than %s, the most the model takes', img ->> 'url',
										  pg_size_pretty(coalesce((j.state ->> 'max_image_bytes')::bigint, 10485760))) END);
		ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			ctype := lower(split_part(coalesce(o -> 'headers' ->> 'content-type', ''), ';', 1));
			IF ctype NOT IN ('image/jpeg', 'image/jpg', 'image/png', 'image/webp', 'image/gif', 'image/avif') THEN
				RETURN jsonb_build_object('action', 'fail',
					'error', format('%s is not a JPEG, PNG, WebP, GIF or AVIF image (Content-Type "%s")',
									img ->> 'url', ctype));
			END IF;
			name := coalesce(nullif(regexp_replace(split_part(split_part(img ->> 'url', '?', 1), '#', 1),
												   '^.*/', ''), ''), 'image');
			RETURN jsonb_build_object('action', 'advance',
				'step', CASE WHEN framed AND hagen._compiles_elsewhere() THEN 'image_source'
							 WHEN framed THEN 'image_frame' WHEN via_fal THEN 'image_initiate' ELSE 'image_store' END,
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('file', o ->> 'file', 'content_type', ctype,
											  'file_name', left(name, 200)))));
		END IF;
		RETURN coalesce(hagen._transient(o, format('fetch of image %s', img ->> 'url')),
			jsonb_build_object('action', 'fail', 'error',
				format('could not fetch image %s: HTTP %s', img ->> 'url', status)));
	WHEN 'image_source' THEN
		IF status BETWEEN 200 AND 299 THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_frame');
		END IF;
		RETURN hagen._s3_failure(o, format('store of image %s for a compile worker', img ->> 'url'));
	WHEN 'image_pull' THEN
		IF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_initiate');
		END IF;
		RETURN hagen._s3_failure(o, format('fetch of the fitted image %s', hagen._image_key(j, i)));
	WHEN 'image_frame' THEN
		IF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object' AND (o ->> 'uploaded')::boolean IS TRUE
		   AND NOT via_fal THEN
			-- Fitted on another host and stored in the bucket: the provider
			-- gets it from there.
			RETURN hagen._image_done(j, hagen.presign_url(hagen._image_key(j, i), 'GET',
				least(hagen._setting_interval('hagen.clip_timeout', '20 minutes') + interval '1 hour',
					  interval '7 days')));
		ELSIF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object' THEN
			RETURN jsonb_build_object('action', 'advance',
				'step', CASE WHEN (o ->> 'uploaded')::boolean IS TRUE THEN 'image_pull'
							 WHEN via_fal THEN 'image_initiate' ELSE 'image_store' END,
				'log', format('image %s fitted to %s (%s): %sx%s from %sx%s%s, %s bytes', img ->> 'url',
							  j.state ->> 'aspect_ratio', j.state ->> 'framing', r ->> 'width', r ->> 'height',
							  r -> 'source' ->> 'width', r -> 'source' ->> 'height',
							  CASE WHEN (r -> 'source' ->> 'orientation') NOT IN ('1', '')
								   THEN ' turned upright (EXIF orientation ' || (r -> 'source' ->> 'orientation') || ')'
								   ELSE '' END,
							  r ->> 'bytes'),
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('file', hagen._work_file(j.project_id, format('images/%s_%s.jpg', j.id, i)),
											  'content_type', 'image/jpeg',
						'file_name', left(regexp_replace(img ->> 'file_name', '\.[A-Za-z0-9]{1,5}$', ''), 195) || '.jpg',
						'width', r -> 'width', 'height', r -> 'height'))));
		ELSIF o ->> 'kind' = 'input' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('could not fit image %s to %s: %s', img ->> 'url', j.state ->> 'aspect_ratio',
								coalesce(o ->> 'error', 'no detail')));
		END IF;
		RETURN jsonb_build_object('action', 'retry', 'max_attempts', 3,
			'error', format('fitting image %s failed: %s', img ->> 'url', coalesce(o ->> 'error', 'no result')));
	WHEN 'image_store' THEN
		IF status BETWEEN 200 AND 299 THEN
			RETURN hagen._image_done(j, hagen.presign_url(hagen._image_key(j, i), 'GET',
				least(hagen._setting_interval('hagen.clip_timeout', '20 minutes') + interval '1 hour',
					  interval '7 days')));
		END IF;
		RETURN coalesce(hagen._transient(o, 'store of a fitted image'),
			jsonb_build_object('action', 'fail', 'error',
				format('could not store the fitted image %s: HTTP %s%s', hagen._image_key(j, i), status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	END CASE;
	RAISE EXCEPTION 'unknown image step "%"', j.step;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._fal_upload_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	img jsonb := j.state -> 'images' -> i;
BEGIN
	CASE j.step
	WHEN 'image_initiate' THEN
		RETURN hagen._http('POST', rtrim(hagen._setting('hagen.fal_rest_url', 'https://rest.fal.ai'), '/')
				|| '/storage/upload/initiate?storage_type=fal-cdn-v3', 'fal', 'status', jsonb_build_object(
			'headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
			'body', jsonb_build_object('content_type', img ->> 'content_type',
									   'file_name', img ->> 'file_name')));
	WHEN 'image_put' THEN
		RETURN hagen._http('PUT', img ->> 'upload_url', 'none', 'image', jsonb_build_object(
			'guard', true, 'body_file', img ->> 'file',
			'headers', jsonb_build_object('content-type', img ->> 'content_type')));
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai upload step "%"', j.step;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._fal_upload_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	images jsonb := j.state -> 'images';
	img jsonb := images -> i;
	b jsonb := o -> 'body';
BEGIN
	CASE j.step
	WHEN 'image_initiate' THEN
		IF status BETWEEN 200 AND 299 AND jsonb_typeof(b -> 'upload_url') = 'string'
		   AND jsonb_typeof(b -> 'file_url') = 'string' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_put',
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('upload_url', b ->> 'upload_url', 'file_url', b ->> 'file_url'))));
		ELSIF status BETWEEN 200 AND 299 THEN
			RETURN jsonb_build_object('action', 'retry',
				'error', 'Fal.ai storage answered without upload_url and file_url');
		ELSIF status BETWEEN 400 AND 499 AND status <> 429 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai storage refused the upload (HTTP %s): %s', status,
								coalesce(hagen._error_text(o), 'no detail')));
		END IF;
		RETURN hagen._transient(o, 'Fal.ai storage initiate');
	WHEN 'image_put' THEN
		IF status BETWEEN 200 AND 299 THEN
			RETURN hagen._image_done(j, img ->> 'file_url');
		ELSIF status = 403 THEN
			-- The signed upload URL expired or was used: ask for a new one.
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_initiate', 'keep_attempts', true,
				'log', 'Fal storage upload URL refused (HTTP 403); asking for a new one');
		END IF;
		RETURN coalesce(hagen._transient(o, 'upload to Fal storage'),
			jsonb_build_object('action', 'fail', 'error',
				format('upload to Fal storage failed: HTTP %s%s', status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai upload step "%"', j.step;
END;
$$;

-- The effect of the current step of a clip or transition job.
CREATE OR REPLACE FUNCTION hagen._generation_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.step
	WHEN 'image_fetch', 'image_frame', 'image_store', 'image_source', 'image_pull' THEN
		RETURN hagen._image_step_effect(j);
	WHEN 'image_initiate', 'image_put', 'submit', 'poll', 'result' THEN
		CASE j.provider
		WHEN 'fal' THEN RETURN hagen._fal_effect(j);
		WHEN 'xai' THEN RETURN hagen._xai_effect(j);
		END CASE;
		RAISE EXCEPTION 'unknown provider "%"', j.provider;
	WHEN 'download' THEN
		RETURN hagen._http('GET', j.state ->> 'video_url', 'none', 'media',
			jsonb_build_object('guard', true, 'follow_redirects', true, 'save_to', j.state ->> 'file',
							   'max_bytes', hagen._max_download_bytes()));
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		RETURN hagen._upload_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a % job', j.step, j.kind;
END;
$$;

-- Reads the outcome of the current step of a clip or transition job.
CREATE OR REPLACE FUNCTION hagen._generation_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	-- An HTTP status (an image effect's outcome says "ok" or "error" instead).
	status integer := CASE WHEN o ->> 'status' ~ '^[0-9]{1,4}$' THEN (o ->> 'status')::integer ELSE 0 END;
	d jsonb;
BEGIN
	CASE j.step
	WHEN 'image_fetch', 'image_frame', 'image_store', 'image_source', 'image_pull' THEN
		RETURN hagen._image_step_interpret(j, o);
	WHEN 'image_initiate', 'image_put', 'submit', 'poll', 'result' THEN
		CASE j.provider
		WHEN 'fal' THEN RETURN hagen._fal_interpret(j, o);
		WHEN 'xai' THEN RETURN hagen._xai_interpret(j, o);
		END CASE;
	WHEN 'download' THEN
		IF o ->> 'error_kind' = 'guard' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('refused to download %s: %s', j.state ->> 'video_url', o ->> 'error'));
		ELSIF o ->> 'error_kind' = 'too_large' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('the video at %s is larger than hagen.max_download_bytes (%s bytes)',
								j.state ->> 'video_url', hagen._max_download_bytes()));
		ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			RETURN jsonb_build_object('action', 'advance',
				'step', hagen._store_step((o ->> 'bytes')::bigint),
				'state', jsonb_build_object('bytes', o -> 'bytes'));
		END IF;
		RETURN coalesce(hagen._transient(o, 'download of the generated video'),
			jsonb_build_object('action', 'fail', 'error',
				format('download of %s failed: HTTP %s%s', j.state ->> 'video_url', status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		d := hagen._upload_interpret(j, o);
		IF d ->> 'action' = 'stored' THEN
			RETURN d || jsonb_build_object('action', 'succeed',
				'cost_cents', coalesce((j.state ->> 'actual_cost_cents')::integer,
									   (j.state ->> 'cost_cents')::integer, 0),
				'state', coalesce(d -> 'state', '{}') || jsonb_build_object('url', hagen._stored_url(j.state ->> 'key')));
		END IF;
		RETURN d;
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a % job', j.step, j.kind;
END;
$$;

-- Queues a generation job for every clip and seamless transition of a
-- project that is not completed and has no live job.  Returns how many.
CREATE OR REPLACE FUNCTION hagen._enqueue_generation(p hagen.video_project) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	c record;
	n integer := 0;
	m hagen.video_model := hagen._video_model(p.provider);
	time_limit interval := hagen._setting_interval('hagen.clip_timeout', '20 minutes');
	common jsonb;
	first_step text := hagen._first_step(p.provider, p.framing);
BEGIN
	common := jsonb_build_object('model', m.model, 'resolution', m.resolution,
								 'fields', hagen._model_fields(m), 'aspect_ratio', p.aspect_ratio,
								 'negative_prompt', hagen._negative_prompt(),
								 'framing', p.framing, 'image_route', hagen._image_route(p.provider),
								 'max_image_side', m.max_image_side, 'max_image_bytes', m.max_image_bytes);
	FOR c IN
		SELECT v.*, lead(v.source_image_url) OVER w AS next_source, lead(v.id) OVER w AS next_id
		FROM hagen.video_clip v WHERE v.project_id = p.id
		WINDOW w AS (ORDER BY v.sequence_order)
		ORDER BY v.sequence_order
	LOOP
		IF c.status <> 'completed' THEN
			IF hagen._enqueue(p.id, c.id, 'clip', p.provider, first_step, common || jsonb_build_object(
					'start_image', c.source_image_url,
					'end_image', coalesce(c.end_image_url, c.source_image_url),
					'images', hagen._fal_image_steps(ARRAY[c.source_image_url,
						CASE WHEN m.end_image_field IS NOT NULL THEN c.end_image_url END]),
					'prompt', hagen._clip_prompt((SELECT v FROM hagen.video_clip v WHERE v.id = c.id), p),
					'duration', c.duration::integer,
					'audio', p.generate_native_audio,
					'key', hagen.get_video_path(p.workspace_id, p.id, c.id || '.mp4'),
					'file', hagen._work_file(p.id, c.id || '.mp4'),
					'cost_cents', hagen._cost_cents(m, c.duration::numeric, p.generate_native_audio)),
					'http', time_limit) IS NOT NULL THEN
				n := n + 1;
			END IF;
			UPDATE hagen.video_clip SET status = 'processing', error_message = NULL
			WHERE id = c.id;
		END IF;
		IF c.transition_type = 'seamless' AND c.next_id IS NOT NULL
		   AND c.transition_status IS DISTINCT FROM 'completed' THEN
			IF hagen._enqueue(p.id, c.id, 'transition', p.provider, first_step, common || jsonb_build_object(
					'start_image', coalesce(c.end_image_url, c.source_image_url),
					'end_image', c.next_source,
					'images', hagen._fal_image_steps(ARRAY[coalesce(c.end_image_url, c.source_image_url),
						CASE WHEN m.end_image_field IS NOT NULL THEN c.next_source END]),
					'next_clip_id', c.next_id,
					'prompt', hagen._transition_prompt((SELECT v FROM hagen.video_clip v WHERE v.id = c.id),
													   (SELECT v FROM hagen.video_clip v WHERE v.id = c.next_id)),
					'duration', 5,
					'audio', false,
					'key', hagen.get_video_path(p.workspace_id, p.id, 'transition_' || c.id || '.mp4'),
					'file', hagen._work_file(p.id, 'transition_' || c.id || '.mp4'),
					'cost_cents', hagen._cost_cents(m, 5, false)),
					'http', time_limit) IS NOT NULL THEN
				n := n + 1;
			END IF;
			UPDATE hagen.video_clip SET transition_status = 'processing' WHERE id = c.id;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

REVOKE ALL ON FUNCTION hagen._image_effect(text, text, text, text, integer, integer),
	hagen._first_step(text, text), hagen._image_route(text), hagen._image_key(hagen.job, integer),
	hagen._image_step_effect(hagen.job), hagen._image_done(hagen.job, text),
	hagen._image_step_interpret(hagen.job, jsonb) FROM PUBLIC;

-- Compile workers on other hosts (src/sql/62_remote.sql), and what operators
-- see of them; hagen.compile_workers is SELECTable by operators as at install.
-- hagen.claim_jobs gains a filter of steps (remote workers take only theirs).
DROP FUNCTION hagen.claim_jobs(text, integer, interval);
-- Claims up to max_jobs due jobs of a lane for the calling worker.  Each
-- comes with a fresh lease token and the one effect its current step needs.
-- With steps, only jobs whose "kind:step" is listed (remote compile
-- workers, 62_remote.sql, take only the steps whose files go through the
-- bucket).
CREATE OR REPLACE FUNCTION hagen.claim_jobs(lane text, max_jobs integer,
								 lease interval DEFAULT '2 minutes', steps text[] DEFAULT NULL)
	RETURNS TABLE (job_id bigint, token bigint, effect jsonb)
	LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
	eff jsonb;
	tok bigint;
	timeout_ms bigint;
BEGIN
	IF max_jobs IS NULL OR max_jobs <= 0 THEN
		RETURN;
	END IF;
	PERFORM hagen._recover_lane(claim_jobs.lane, true);

	FOR j IN
		SELECT * FROM hagen.job q
		WHERE q.lane = claim_jobs.lane AND q.status = 'queued' AND q.run_at <= now()
		  AND (claim_jobs.steps IS NULL OR q.kind || ':' || q.step = ANY (claim_jobs.steps))
		ORDER BY q.run_at, q.id
		LIMIT max_jobs
		FOR UPDATE SKIP LOCKED
	LOOP
		-- A job past its time limit, or of a canceled project, gets no effect.
		IF j.deadline_at IS NOT NULL AND j.deadline_at < now() THEN
			PERFORM hagen._apply(j, jsonb_build_object('action', 'fail', 'error',
				format('%s job did not finish within its time limit (%s)', j.kind,
					   CASE WHEN j.kind IN ('compile', 'chunk') THEN 'hagen.compile_timeout'
							ELSE 'hagen.clip_timeout' END)));
			-- A request still at the provider is canceled there.
			IF j.request_id IS NOT NULL AND j.step IN ('poll', 'result') THEN
				PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', j.provider, 'cancel',
					jsonb_build_object('request_id', j.request_id, 'for_job', j.id,
									   'model', j.state ->> 'model', 'cancel_url', j.state ->> 'cancel_url'));
			END IF;
			CONTINUE;
		END IF;
		IF j.cancel_requested THEN
			PERFORM hagen._cancel_job(j);
			CONTINUE;
		END IF;

		BEGIN
			eff := hagen._effect(j);
		EXCEPTION WHEN others THEN
			PERFORM hagen._apply(j, jsonb_build_object('action', 'fail',
				'error', format('could not prepare step %s: %s', j.step, SQLERRM)));
			CONTINUE;
		END;

		tok := nextval('hagen.lease_token_seq');
		timeout_ms := coalesce((eff ->> 'timeout_ms')::bigint, 60000);
		UPDATE hagen.job
		SET status = 'running', lease_token = tok, lease_owner = pg_backend_pid(),
			lease_expires_at = now() + greatest(lease, make_interval(secs => timeout_ms / 1000.0 + 60)),
			attempts = attempts + 1, total_attempts = total_attempts + 1,
			started_at = coalesce(started_at, now())
		WHERE id = j.id;
		job_id := j.id;
		token := tok;
		effect := eff;
		RETURN NEXT;
	END LOOP;
END;
$$;

-- The workers seen, by the name they give.
CREATE TABLE hagen.remote_worker (
	name				text PRIMARY KEY,
	first_seen			timestamptz NOT NULL DEFAULT now(),
	last_seen			timestamptz NOT NULL DEFAULT now(),
	last_address		inet,
	jobs_done			bigint NOT NULL DEFAULT 0,
	jobs_failed			bigint NOT NULL DEFAULT 0,
	jobs_handed_back	bigint NOT NULL DEFAULT 0
);

-- The claims made through hagen.worker_claim: which worker holds which job
-- under which token.  A remote worker acts only on jobs it claimed.
CREATE TABLE hagen.remote_lease (
	job_id		bigint NOT NULL REFERENCES hagen.job (id) ON DELETE CASCADE,
	token		bigint NOT NULL,
	worker		text NOT NULL REFERENCES hagen.remote_worker (name) ON DELETE CASCADE,
	claimed_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (job_id, token)
);
CREATE INDEX remote_lease_worker_idx ON hagen.remote_lease (worker);

-- Whether every effect of the compile lane runs on other hosts: the server
-- runs no compile worker (hagen.compile_workers, a restart setting, is 0).
-- Then photos are fitted through the bucket (83_images.sql) and a compile
-- does not fetch the stored clips to the database host (60_compile.sql).
CREATE FUNCTION hagen._compiles_elsewhere() RETURNS boolean
	LANGUAGE sql STABLE
	RETURN coalesce(hagen._setting('hagen.compile_workers', '1')::integer, 1) = 0;

-- The steps a worker on another host can carry out ("kind:step"): those
-- whose effect names every file it reads and writes by a storage key.  The
-- photo framing of clip jobs (image_frame) also runs on the compile lane,
-- but on files of the database host's work directory: only the compile
-- workers in the server take it.
CREATE FUNCTION hagen._remote_steps() RETURNS text[]
	LANGUAGE sql STABLE
	RETURN ARRAY['compile:compile', 'compile:plan', 'chunk:encode', 'compile:join']
		|| CASE WHEN hagen._compiles_elsewhere() THEN ARRAY['clip:image_frame', 'transition:image_frame']
				ELSE '{}'::text[] END;

-- The lease of a job claimed by a remote worker, renewed by its heartbeats.
CREATE FUNCTION hagen._worker_lease() RETURNS interval
	LANGUAGE sql STABLE RETURN hagen._setting_interval('hagen.worker_lease', '1 minute');

-- How long the presigned URLs of a remote effect live, in seconds: the
-- effect's time limit plus hagen.worker_url_margin (1 s to 7 days).
CREATE FUNCTION hagen._worker_url_seconds(timeout_ms bigint) RETURNS integer
	LANGUAGE sql STABLE
	RETURN least(604800, greatest(1, ceil(coalesce(timeout_ms, 0) / 1000.0
		+ extract(epoch FROM hagen._setting_interval('hagen.worker_url_margin', '15 minutes')))))::integer;

-- The largest file one presigned PUT may carry: R2's limit of a single
-- upload (5 GiB - 5 MiB).
CREATE FUNCTION hagen._worker_max_put_bytes() RETURNS bigint
	LANGUAGE sql IMMUTABLE RETURN 5 * 1073741824::bigint - 5 * 1048576;

-- Checks the name a worker gives: 1 to 100 printable characters.
CREATE FUNCTION hagen._check_worker_name(worker text) RETURNS void
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF worker IS NULL OR worker !~ '^[[:graph:]]{1,100}$' THEN
		RAISE EXCEPTION 'invalid worker name "%"', coalesce(left(worker, 120), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A worker name is 1 to 100 printable characters without spaces, such as "host-1" (hagen-compile worker --name).';
	END IF;
END;
$$;

-- A compile-lane effect made for a worker on another host: every input
-- with a presigned GET URL, every output with a presigned PUT URL (and the
-- largest size one PUT may carry), all expiring together.  Any effect of
-- the compile lane has this shape (type "compile", dir, manifest, inputs
-- and outputs with storage keys); one without a key cannot be carried out
-- elsewhere and raises.
CREATE FUNCTION hagen._remote_effect(eff jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	seconds integer := hagen._worker_url_seconds((eff ->> 'timeout_ms')::bigint);
	x jsonb;
	inputs jsonb := '[]';
	outputs jsonb := '[]';
BEGIN
	IF eff ->> 'type' IS DISTINCT FROM 'compile' THEN
		RAISE EXCEPTION 'a remote worker cannot carry out an effect of type "%"', coalesce(eff ->> 'type', 'NULL');
	END IF;
	FOR x IN SELECT * FROM jsonb_array_elements(coalesce(eff -> 'inputs', '[]')) LOOP
		IF x ->> 'key' IS NULL THEN
			RAISE EXCEPTION 'input "%" names no storage key', x ->> 'file';
		END IF;
		PERFORM hagen._check_key(x ->> 'key');
		inputs := inputs || jsonb_build_array(x || jsonb_build_object('url',
			hagen._presign(hagen._s3_url(x ->> 'key'), 'GET', seconds, now())));
	END LOOP;
	FOR x IN SELECT * FROM jsonb_array_elements(coalesce(eff -> 'outputs', '[]')) LOOP
		IF x ->> 'key' IS NULL THEN
			RAISE EXCEPTION 'output "%" names no storage key', x ->> 'file';
		END IF;
		PERFORM hagen._check_key(x ->> 'key');
		outputs := outputs || jsonb_build_array(x || jsonb_build_object('url',
			hagen._presign(hagen._s3_url(x ->> 'key'), 'PUT', seconds, now()),
			'max_bytes', hagen._worker_max_put_bytes()));
	END LOOP;
	RETURN eff || jsonb_build_object('inputs', inputs, 'outputs', outputs, 'urls_expire_in', seconds,
		'lease_ms', (extract(epoch FROM hagen._worker_lease()) * 1000)::bigint);
END;
$$;

-- The claim a remote worker holds on a job under a token, or NULL when it
-- holds none (the call is then stale).  A job of another lane is refused
-- outright: the role can reach nothing but the compile lane.
CREATE FUNCTION hagen._remote_claim(job_id bigint, token bigint) RETURNS hagen.remote_lease
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	l hagen.remote_lease;
BEGIN
	SELECT * INTO l FROM hagen.remote_lease r WHERE r.job_id = _remote_claim.job_id AND r.token = _remote_claim.token;
	IF FOUND THEN
		RETURN l;
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.job j WHERE j.id = _remote_claim.job_id AND j.lane <> 'compile') THEN
		RAISE EXCEPTION 'job % is not a job of the compile lane', job_id
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Remote workers carry out compile-lane jobs only, and only those they claimed with hagen.worker_claim.';
	END IF;
	RETURN NULL;
END;
$$;

-- Claims up to max_jobs due jobs of the compile lane for the worker named
-- (1 to 64), each with a fresh lease token and its effect made for a
-- remote host.  Also records that the worker was seen.
CREATE FUNCTION hagen.worker_claim(worker text, max_jobs integer DEFAULT 1)
	RETURNS TABLE (job_id bigint, token bigint, effect jsonb)
	LANGUAGE plpgsql AS $$
DECLARE
	c record;
	j hagen.job;
	eff jsonb;
	err text;
BEGIN
	PERFORM hagen._check_worker_name(worker);
	IF max_jobs IS NULL OR max_jobs NOT BETWEEN 1 AND 64 THEN
		RAISE EXCEPTION 'invalid max_jobs %', coalesce(max_jobs::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A worker claims 1 to 64 jobs at once (hagen-compile worker --jobs).';
	END IF;
	INSERT INTO hagen.remote_worker AS w (name, last_address) VALUES (worker, inet_client_addr())
	ON CONFLICT (name) DO UPDATE SET last_seen = now(), last_address = excluded.last_address;
	-- Claims nobody will report on any more.
	DELETE FROM hagen.remote_lease l
	WHERE l.claimed_at < now() - interval '1 day'
	  AND NOT EXISTS (SELECT 1 FROM hagen.job q WHERE q.id = l.job_id AND q.lease_token = l.token
					  AND q.status = 'running');

	FOR c IN SELECT * FROM hagen.claim_jobs('compile', max_jobs, hagen._worker_lease(), hagen._remote_steps()) LOOP
		SELECT * INTO j FROM hagen.job q WHERE q.id = c.job_id;
		err := NULL;
		BEGIN
			eff := hagen._remote_effect(c.effect);
		EXCEPTION WHEN others THEN
			err := SQLERRM;
		END;
		IF err IS NOT NULL THEN
			PERFORM hagen.fail_job(c.job_id, c.token,
				format('could not prepare step %s for a remote worker: %s', j.step, err));
			CONTINUE;
		END IF;
		-- A short lease, kept by heartbeats every 2 s.
		UPDATE hagen.job q SET lease_expires_at = now() + hagen._worker_lease() WHERE q.id = c.job_id;
		INSERT INTO hagen.remote_lease (job_id, token, worker) VALUES (c.job_id, c.token, worker);
		PERFORM hagen._log(c.job_id, j.project_id, 'info', format('claimed by remote worker %s', worker),
						   jsonb_strip_nulls(jsonb_build_object('step', j.step, 'attempt', j.attempts,
							   'address', inet_client_addr()::text)));
		UPDATE hagen.video_project p
		SET progress = jsonb_set(p.progress, '{label}', '"Compiling the video"')
		WHERE p.id = j.project_id AND p.progress ->> 'label' = 'Waiting for a compile worker';
		job_id := c.job_id;
		token := c.token;
		effect := eff;
		RETURN NEXT;
	END LOOP;
END;
$$;

-- Keeps a remote worker's lease for another hagen.worker_lease and carries
-- how far the helper has come (0 to 1, NULL when unchanged).  False means
-- stop: the job was canceled, or the lease was lost to another worker.
CREATE FUNCTION hagen.worker_heartbeat(job_id bigint, token bigint, fraction double precision DEFAULT NULL)
	RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
	l hagen.remote_lease := hagen._remote_claim(job_id, token);
	ok boolean;
BEGIN
	IF fraction IS NOT NULL AND (fraction < 0 OR fraction > 1 OR fraction = 'NaN') THEN
		RAISE EXCEPTION 'invalid fraction %', fraction
			USING ERRCODE = 'invalid_parameter_value', HINT = 'A fraction is between 0 and 1.';
	END IF;
	IF l.job_id IS NULL THEN
		RETURN false;
	END IF;
	ok := hagen.heartbeat(job_id, token,
						  CASE WHEN fraction IS NOT NULL THEN jsonb_build_object('fraction', fraction) END,
						  hagen._worker_lease());
	-- The worker may have reconnected: its lease is held by its new session.
	UPDATE hagen.job q SET lease_owner = pg_backend_pid()
	WHERE q.id = l.job_id AND q.lease_token = l.token AND q.status = 'running'
	  AND q.lease_owner IS DISTINCT FROM pg_backend_pid();
	UPDATE hagen.remote_worker w SET last_seen = now() WHERE w.name = l.worker;
	RETURN ok;
END;
$$;

-- Hands back what a remote worker's effect came to: {"status": "ok",
-- "result": {...}, "uploaded": true} once it stored every output, or
-- {"status": "error", "error": ..., "segment": N}; a failed transfer also
-- carries "transfer": {"what", "key", "status", "body_text"}, from which
-- the error is written here (S3 error XML read like the dispatcher's), and
-- "stats" ({download_bytes, download_ms, compile_ms, upload_bytes,
-- upload_ms}) goes into the job log.  Returns 'applied', or 'stale' when
-- the job is no longer the worker's.
CREATE FUNCTION hagen.worker_complete(job_id bigint, token bigint, outcome jsonb)
	RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	l hagen.remote_lease := hagen._remote_claim(job_id, token);
	o jsonb := outcome;
	t jsonb := outcome -> 'transfer';
	s jsonb := outcome -> 'stats';
	p uuid;
	r text;
BEGIN
	IF jsonb_typeof(o) IS DISTINCT FROM 'object' OR o ->> 'status' IS NULL
	   OR o ->> 'status' NOT IN ('ok', 'error') THEN
		RAISE EXCEPTION 'invalid outcome of a remote worker: %', left(coalesce(o::text, 'NULL'), 200)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'An outcome is {"status": "ok", "result": {...}, "uploaded": true} or {"status": "error", "error": "..."}.';
	ELSIF o ->> 'status' = 'ok' AND (o -> 'uploaded') IS DISTINCT FROM 'true'::jsonb THEN
		RAISE EXCEPTION 'a remote worker''s outcome must say "uploaded": true'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Its outputs are on its own host: it stores them through the presigned URLs of the effect before it completes the job.';
	END IF;
	IF l.job_id IS NULL THEN
		RETURN 'stale';
	END IF;
	IF jsonb_typeof(t) = 'object' AND (t ->> 'status') ~ '^[0-9]+$' AND (t ->> 'status')::integer > 0 THEN
		o := o || jsonb_build_object('error', hagen._s3_failure(jsonb_build_object(
			'status', (t ->> 'status')::integer, 'body_text', t ->> 'body_text'),
			format('%s of %s', coalesce(t ->> 'what', 'transfer'), t ->> 'key')) ->> 'error');
	END IF;
	o := o || jsonb_build_object('worker', l.worker);
	SELECT q.project_id INTO p FROM hagen.job q WHERE q.id = l.job_id;
	IF jsonb_typeof(s) = 'object' THEN
		PERFORM hagen._log(l.job_id, p, 'info',
			format('remote worker %s: inputs %s bytes in %s ms, helper %s ms, outputs %s bytes in %s ms',
				   l.worker, s ->> 'download_bytes', s ->> 'download_ms', s ->> 'compile_ms',
				   s ->> 'upload_bytes', s ->> 'upload_ms'),
			jsonb_build_object('worker', l.worker, 'stats', s));
	END IF;
	r := hagen.complete_job(l.job_id, l.token, o);
	DELETE FROM hagen.remote_lease x WHERE x.job_id = l.job_id AND x.token = l.token;
	UPDATE hagen.remote_worker w
	SET last_seen = now(),
		jobs_done = jobs_done + CASE WHEN r = 'applied' AND o ->> 'status' = 'ok' THEN 1 ELSE 0 END,
		jobs_failed = jobs_failed + CASE WHEN r = 'applied' AND o ->> 'status' = 'error' THEN 1 ELSE 0 END
	WHERE w.name = l.worker;
	RETURN r;
END;
$$;

-- Hands a job back (a worker stopping before it finished): queued again at
-- once, without counting the attempt.  False when it was no longer the
-- worker's.
CREATE FUNCTION hagen.worker_release(job_id bigint, token bigint) RETURNS boolean
	LANGUAGE plpgsql AS $$
DECLARE
	l hagen.remote_lease := hagen._remote_claim(job_id, token);
	j hagen.job;
BEGIN
	IF l.job_id IS NULL THEN
		RETURN false;
	END IF;
	DELETE FROM hagen.remote_lease x WHERE x.job_id = l.job_id AND x.token = l.token;
	SELECT * INTO j FROM hagen.job q WHERE q.id = l.job_id FOR UPDATE;
	IF NOT FOUND OR j.status <> 'running' OR j.lease_token IS DISTINCT FROM l.token THEN
		RETURN false;
	END IF;
	IF j.cancel_requested THEN
		PERFORM hagen._cancel_job(j);
	ELSE
		UPDATE hagen.job q
		SET status = 'queued', run_at = now(), lease_token = NULL, lease_owner = NULL,
			lease_expires_at = NULL, attempts = greatest(q.attempts - 1, 0)
		WHERE q.id = j.id;
		PERFORM hagen._log(j.id, j.project_id, 'info',
			format('handed back by remote worker %s (stopping); queued again', l.worker),
			jsonb_build_object('step', j.step, 'worker', l.worker));
	END IF;
	UPDATE hagen.remote_worker w SET last_seen = now(), jobs_handed_back = jobs_handed_back + 1
	WHERE w.name = l.worker;
	RETURN true;
END;
$$;

-- Milliseconds until the next job a remote worker can take falls due (0:
-- one is due now; a lease running out counts), NULL when there is none.
CREATE FUNCTION hagen.worker_next_due() RETURNS bigint
	LANGUAGE sql STABLE AS $$
	SELECT CASE WHEN t IS NOT NULL
				THEN greatest(0, ceil(extract(epoch FROM (t - now())) * 1000))::bigint END
	FROM (SELECT least(
			(SELECT run_at FROM hagen.job
			 WHERE status = 'queued' AND lane = 'compile' AND kind || ':' || step = ANY (hagen._remote_steps())
			 ORDER BY run_at LIMIT 1),
			(SELECT lease_expires_at FROM hagen.job
			 WHERE status = 'running' AND lane = 'compile' AND kind || ':' || step = ANY (hagen._remote_steps())
			 ORDER BY lease_expires_at LIMIT 1)) AS t) AS due;
$$;

-- A job remote workers can take queued: NOTIFY hagen_compile wakes them at
-- commit (one notification per transaction, PostgreSQL folds
-- the same payload).  With no compile worker in the server, a project
-- whose job is due says that it waits for one.  Which steps remote workers
-- take is asked here, not in the trigger's WHEN: a WHEN clause is prepared
-- again by every statement that writes a job, and preparing the call of
-- _remote_steps() (inlined with _compiles_elsewhere) cost about 50 us of
-- each (pgbench, one job update: 0.31 ms against 0.26 ms).
CREATE FUNCTION hagen._compile_lane_queued() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	IF NOT (NEW.kind || ':' || NEW.step = ANY (hagen._remote_steps())) THEN
		RETURN NULL;
	END IF;
	PERFORM pg_notify('hagen_compile', '');
	IF NEW.run_at <= now() AND NEW.project_id IS NOT NULL
	   AND hagen._setting('hagen.compile_workers', '1') = '0' THEN
		UPDATE hagen.video_project p
		SET progress = jsonb_set(p.progress, '{label}', '"Waiting for a compile worker"')
		WHERE p.id = NEW.project_id AND p.status = 'compiling'
		  AND p.progress ->> 'label' IS DISTINCT FROM 'Waiting for a compile worker';
	END IF;
	RETURN NULL;
END;
$$;
CREATE TRIGGER job_compile_lane_queued AFTER INSERT OR UPDATE OF status, run_at, lane ON hagen.job
	FOR EACH ROW WHEN (NEW.lane = 'compile' AND NEW.status = 'queued')
	EXECUTE FUNCTION hagen._compile_lane_queued();

-- For operators: every remote worker seen, when, what it did, and the jobs
-- it holds now.
CREATE VIEW hagen.compile_workers AS
SELECT w.name, w.last_address AS address, w.first_seen, w.last_seen, now() - w.last_seen AS silent_for,
	   w.jobs_done, w.jobs_failed, w.jobs_handed_back,
	   coalesce(cur.jobs, '{}') AS current_jobs, coalesce(cur.projects, '{}') AS current_projects
FROM hagen.remote_worker w
LEFT JOIN LATERAL (
	SELECT array_agg(j.id ORDER BY j.id) AS jobs, array_agg(j.project_id ORDER BY j.id) AS projects
	FROM hagen.remote_lease l JOIN hagen.job j ON j.id = l.job_id AND j.lease_token = l.token
	WHERE l.worker = w.name AND j.status = 'running') cur ON true;

-- The role remote workers log in with (the DBA grants it to a login role):
-- the five functions above and nothing else; no table, no setting.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hagen_worker') THEN
		CREATE ROLE hagen_worker NOLOGIN;
	END IF;
END;
$$;
ALTER FUNCTION hagen.worker_claim(text, integer) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.worker_heartbeat(bigint, bigint, double precision)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.worker_complete(bigint, bigint, jsonb)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.worker_release(bigint, bigint) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.worker_next_due() SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
REVOKE ALL ON FUNCTION hagen.worker_claim(text, integer), hagen.worker_heartbeat(bigint, bigint, double precision),
	hagen.worker_complete(bigint, bigint, jsonb), hagen.worker_release(bigint, bigint), hagen.worker_next_due()
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hagen.worker_claim(text, integer), hagen.worker_heartbeat(bigint, bigint, double precision),
	hagen.worker_complete(bigint, bigint, jsonb), hagen.worker_release(bigint, bigint), hagen.worker_next_due()
	TO hagen_worker;
GRANT USAGE ON SCHEMA hagen TO hagen_worker;
GRANT SELECT ON hagen.remote_worker, hagen.remote_lease, hagen.compile_workers TO hagen_operator;

-- A re-encode split into chunks encoded by several compile workers at once
-- and joined (src/sql/63_chunks.sql; the compile's steps plan, chunks,
-- gather and join in 60_compile.sql; settings hagen.compile_chunk_length
-- and hagen.compile_threads).
ALTER TABLE hagen.job DROP CONSTRAINT job_kind_check,
	ADD CONSTRAINT job_kind_check CHECK (kind IN ('clip', 'transition', 'compile', 'cancel',
													  'upload_part', 'purge', 'fetch', 'cleanup',
													  'chunk'));
-- Threads of one run of hagen-compile (0: one per core), put into the
-- manifest of a compile when it is queued (and of its chunks).
CREATE FUNCTION hagen._compile_threads() RETURNS integer
	LANGUAGE sql STABLE RETURN hagen._setting('hagen.compile_threads', '0')::integer;

-- The shortest chunk of a split re-encode, in seconds of video (0: a
-- re-encode is never split).
CREATE FUNCTION hagen._chunk_length() RETURNS numeric
	LANGUAGE sql STABLE
	RETURN extract(epoch FROM hagen._setting_interval('hagen.compile_chunk_length', '10 seconds'));

-- A compile-lane effect: hagen-compile runs on the manifest in the
-- directory dir; inputs and outputs name the storage key of every file, so
-- that a worker on another host moves them through the bucket.
CREATE FUNCTION hagen._compile_lane_effect(dir text, manifest jsonb, inputs jsonb, outputs jsonb)
	RETURNS jsonb LANGUAGE sql STABLE
	RETURN jsonb_build_object('type', 'compile', 'dir', dir,
		'timeout_ms', (extract(epoch FROM hagen._compile_timeout()) * 1000)::bigint,
		'manifest', manifest,
		'inputs', coalesce((SELECT jsonb_agg(jsonb_build_object('file', i ->> 'file', 'key', i ->> 'key'))
							FROM jsonb_array_elements(inputs) i), '[]'),
		'outputs', outputs);

-- Whether a compile is planned and split into chunks rather than run at
-- once: when it must re-encode, which SQL knows from a crossfade.  (Clips
-- of mixed formats also make it re-encode, which only the probe finds; a
-- project's clips come from one provider and model, so they are compiled
-- in one run, as before.)
CREATE FUNCTION hagen._compile_splits(j hagen.job) RETURNS boolean
	LANGUAGE sql STABLE
	RETURN hagen._chunk_length() > 0
		AND jsonb_array_length(j.state -> 'manifest' -> 'segments') >= 2
		AND j.state -> 'manifest' @? '$.segments[*] ? (@.crossfade > 0)';

-- Reads the result of hagen-compile: a decision when it failed (retried
-- once, then the project fails with its message, which names the segment),
-- NULL when it succeeded.
CREATE FUNCTION hagen._compile_failure(o jsonb, what text) RETURNS jsonb
	LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	msg text := coalesce(o ->> 'error', 'the compile worker gave no result');
BEGIN
	IF o ->> 'segment' IS NOT NULL AND msg !~ ('\msegment ' || (o ->> 'segment') || '\M') THEN
		msg := msg || ' (segment ' || (o ->> 'segment') || ')';
	END IF;
	RETURN jsonb_build_object('action', 'retry', 'max_attempts', 2, 'error', what || ': ' || msg);
END;
$$;

-- Cuts the plan's timeline into chunks: [{"first", "last"}] (1-based
-- segments), each at least `seconds` of clips except the last.  A chunk may
-- begin at a segment that fades in only when the segment's fades in and
-- out leave frames between them (the chunk leaves its first frames out: the
-- chunk before blended them).
CREATE FUNCTION hagen._chunk_split(plan jsonb, seconds numeric) RETURNS jsonb
	LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	segs jsonb := plan -> 'segments';
	n integer := jsonb_array_length(plan -> 'segments');
	groups jsonb := '[]';
	first integer := 1;
	length numeric := 0;
	fade_in integer;
	fade_out integer;
BEGIN
	IF seconds IS NULL OR seconds <= 0 OR n IS NULL OR n = 0 THEN
		RETURN NULL;
	END IF;
	FOR i IN 1 .. n LOOP
		IF i > first AND length >= seconds THEN
			fade_in := (segs -> (i - 1) ->> 'fade_frames')::integer;
			fade_out := coalesce((segs -> i ->> 'fade_frames')::integer, 0);
			IF fade_in = 0 OR fade_in + fade_out <= (segs -> (i - 1) ->> 'frames')::integer - 2 THEN
				groups := groups || jsonb_build_array(jsonb_build_object('first', first, 'last', i - 1));
				first := i;
				length := 0;
			END IF;
		END IF;
		length := length + (segs -> (i - 1) ->> 'duration')::numeric;
	END LOOP;
	RETURN groups || jsonb_build_array(jsonb_build_object('first', first, 'last', n));
END;
$$;

-- Where the chunks of a compile job are stored: one prefix per compile
-- job, so that the deletion of an earlier run's chunks never meets a
-- later run's.
CREATE FUNCTION hagen._chunk_prefix(q hagen.job, workspace text) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN hagen.get_video_path(workspace, q.project_id, 'chunks') || '/' || q.id || '/';

-- The directory of one attempt of a chunk (relative to hagen.work_dir).
CREATE FUNCTION hagen._chunk_attempt_dir(j hagen.job, attempt integer) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN hagen._work_file(j.project_id, format('chunk_%s_%s', j.id, attempt));

-- How a chunk is called in messages.
CREATE FUNCTION hagen._chunk_name(j hagen.job) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN format('chunk %s of %s (segments %s to %s)', j.state ->> 'number', j.state ->> 'of',
				  j.state ->> 'first', j.state ->> 'last');

-- Queues one chunk job per group of segments of a compile job, from its
-- plan.  Each carries the manifest hagen-compile reads: its segments with
-- their numbers in the video and their fades in frames, the head of the
-- next segment when a fade crosses into it, the plan's target; and the
-- inputs it needs, with their storage keys.
CREATE FUNCTION hagen._chunk_queue(q hagen.job, plan jsonb, groups jsonb) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	segs jsonb := q.state -> 'manifest' -> 'segments';
	ps jsonb := plan -> 'segments';
	n integer := jsonb_array_length(q.state -> 'manifest' -> 'segments');
	total integer := jsonb_array_length(groups);
	ws text;
	g record;
	a integer;
	b integer;
	upto integer;
BEGIN
	SELECT workspace_id INTO ws FROM hagen.video_project WHERE id = q.project_id;
	FOR g IN SELECT x, k FROM jsonb_array_elements(groups) WITH ORDINALITY AS t(x, k) LOOP
		a := (g.x ->> 'first')::integer;
		b := (g.x ->> 'last')::integer;
		upto := CASE WHEN b < n AND (ps -> b ->> 'fade_frames')::integer > 0 THEN b + 1 ELSE b END;
		INSERT INTO hagen.job (project_id, kind, lane, step, state, deadline_at, parent_id)
		SELECT q.project_id, 'chunk', 'compile', 'encode', jsonb_build_object(
				'number', g.k, 'of', total, 'first', a, 'last', b,
				'seconds', (SELECT sum((ps -> (i - 1) ->> 'duration')::numeric) FROM generate_series(a, b) i),
				'key', hagen._chunk_prefix(q, ws) || g.k || '.mp4',
				'manifest', jsonb_build_object('task', 'chunk',
					'segments', jsonb_agg(segs -> (i - 1)
						|| jsonb_build_object('index', i, 'fade_frames', (ps -> (i - 1) ->> 'fade_frames')::integer)
						|| CASE WHEN i > b THEN '{"head": true}'::jsonb ELSE '{}' END ORDER BY i),
					'aspect_ratio', q.state -> 'manifest' -> 'aspect_ratio',
					'threads', q.state -> 'manifest' -> 'threads',
					'target', jsonb_build_object('width', (plan ->> 'width')::integer,
												 'height', (plan ->> 'height')::integer, 'fps', plan ->> 'fps')),
				'inputs', jsonb_agg(q.state -> 'inputs' -> (i - 1) ORDER BY i)),
			q.deadline_at, q.id
		FROM generate_series(a, upto) i;
	END LOOP;
	RETURN total;
END;
$$;

-- The effect of the current step of a chunk job.
CREATE FUNCTION hagen._chunk_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	dir text;
BEGIN
	CASE j.step
	WHEN 'encode' THEN
		-- The claim this effect is for counts total_attempts up.
		dir := hagen._chunk_attempt_dir(j, j.total_attempts + 1);
		RETURN hagen._compile_lane_effect(dir,
			j.state -> 'manifest' || jsonb_build_object('output', dir || '/chunk.mp4'), j.state -> 'inputs',
			jsonb_build_array(jsonb_build_object('file', dir || '/chunk.mp4', 'key', j.state ->> 'key',
												 'content_type', 'video/mp4')));
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		RETURN hagen._upload_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a chunk job', j.step;
END;
$$;

-- Reads the outcome of the current step of a chunk job.  An encoded chunk
-- is stored in the bucket (a worker on another host stored it itself).
CREATE FUNCTION hagen._chunk_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	r jsonb := o -> 'result';
	nsegs integer := (j.state ->> 'last')::integer - (j.state ->> 'first')::integer + 1;
	file text;
	d jsonb;
BEGIN
	CASE j.step
	WHEN 'encode' THEN
		IF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object' AND r ->> 'task' = 'chunk'
		   AND (r ->> 'frames') ~ '^[0-9]+$' AND (r ->> 'size') ~ '^[0-9]+$'
		   AND r ->> 'first' = j.state ->> 'first' AND r ->> 'last' = j.state ->> 'last'
		   AND jsonb_typeof(r -> 'segments') = 'array' AND jsonb_array_length(r -> 'segments') = nsegs
		   AND jsonb_array_length(jsonb_path_query_array(r -> 'segments',
				   '$[*] ? (@.index >= 1 && @.frames >= 1 && @.held >= 0)')) = nsegs THEN
			file := hagen._chunk_attempt_dir(j, j.total_attempts) || '/chunk.mp4';
			IF (o ->> 'uploaded')::boolean IS TRUE THEN
				RETURN jsonb_build_object('action', 'succeed',
					'log', format('%s: %s frames encoded (%s bytes) and stored from %s', hagen._chunk_name(j),
								  r ->> 'frames', r ->> 'size', coalesce(o ->> 'worker', 'a remote worker')),
					'state', jsonb_build_object('result', r, 'file', file));
			END IF;
			RETURN jsonb_build_object('action', 'advance', 'step', hagen._store_step((r ->> 'size')::bigint),
				'log', format('%s: %s frames encoded (%s bytes)', hagen._chunk_name(j), r ->> 'frames', r ->> 'size'),
				'state', jsonb_build_object('result', r, 'file', file, 'bytes', (r ->> 'size')::bigint,
											'content_type', 'video/mp4'));
		END IF;
		RETURN hagen._compile_failure(o, 'encoding failed');
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		d := hagen._upload_interpret(j, o);
		IF d ->> 'action' = 'stored' THEN
			RETURN jsonb_strip_nulls(jsonb_build_object('action', 'succeed', 'log', d ->> 'log',
														'state', d -> 'state'));
		END IF;
		RETURN d;
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a chunk job', j.step;
END;
$$;

-- The project's percent while chunks are encoded: 85 to 95 %, each chunk
-- weighing its seconds of clips, by the fraction its helper reported (a
-- chunk that is being stored counts 0.95, one stored 1).  Only shown: not
-- waited for when another transaction holds the project.
CREATE FUNCTION hagen._chunks_progress(compile_id bigint) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	project uuid;
	done integer;
	total integer;
	f numeric;
BEGIN
	SELECT min(c.project_id::text)::uuid, count(*) FILTER (WHERE c.status = 'succeeded'), count(*),
		   sum(c.w * CASE WHEN c.status = 'succeeded' THEN 1
						  WHEN c.step = 'encode' THEN 0.9 * least(coalesce((c.state ->> 'fraction')::numeric, 0), 1)
						  ELSE 0.95 END) / nullif(sum(c.w), 0)
	INTO project, done, total, f
	FROM (SELECT x.*, coalesce((x.state ->> 'seconds')::numeric, 1) AS w FROM hagen.job x
		  WHERE x.parent_id = compile_id AND x.kind = 'chunk') c;
	IF total = 0 THEN
		RETURN;
	END IF;
	PERFORM 1 FROM hagen.video_project WHERE id = project FOR UPDATE SKIP LOCKED;
	IF FOUND THEN
		PERFORM hagen._set_progress(project, 'compiling',
			format('Compiling the video (%s of %s parts done)', done, total), 85 + 10 * coalesce(f, 0));
	END IF;
END;
$$;

-- A chunk ended: its compile looks at once when it was the last one, or
-- failed.
CREATE FUNCTION hagen._chunk_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	q hagen.job;
BEGIN
	SELECT * INTO q FROM hagen.job WHERE id = j.parent_id FOR UPDATE;
	IF NOT FOUND OR q.step <> 'chunks' OR q.status NOT IN ('queued', 'running') THEN
		RETURN;
	END IF;
	IF j.status <> 'succeeded' OR NOT EXISTS (SELECT 1 FROM hagen.job c WHERE c.parent_id = q.id
											  AND c.kind = 'chunk' AND c.status IN ('queued', 'running')) THEN
		UPDATE hagen.job SET run_at = now() WHERE id = q.id AND status = 'queued';
	END IF;
	PERFORM hagen._chunks_progress(q.id);
END;
$$;

-- A compile waiting for its chunks, looked at: one failed -> the compile
-- fails naming it; all encoded and stored -> the join's inputs are
-- gathered; otherwise wait on.
CREATE FUNCTION hagen._chunks_check(q hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	bad hagen.job;
BEGIN
	SELECT * INTO bad FROM hagen.job c
	WHERE c.parent_id = q.id AND c.kind = 'chunk' AND c.status IN ('failed', 'canceled')
	ORDER BY (c.state ->> 'number')::integer LIMIT 1;
	IF FOUND THEN
		RETURN jsonb_build_object('action', 'fail', 'error',
			format('%s %s: %s', hagen._chunk_name(bad), bad.status, coalesce(bad.last_error, 'no reason given')));
	ELSIF EXISTS (SELECT 1 FROM hagen.job c WHERE c.parent_id = q.id AND c.kind = 'chunk'
				  AND c.status IN ('queued', 'running')) THEN
		RETURN jsonb_build_object('action', 'advance', 'step', 'chunks',
								  'delay_ms', hagen._compile_watchdog_ms());
	END IF;
	RETURN hagen._join_start(q);
END;
$$;

-- Every chunk is encoded: the join's manifest (each segment with the frames
-- its chunk counted and how many of them it held back for the next fade,
-- the chunks' files in order) and inputs (the segments, the music and the
-- chunks, with their storage keys), and one fetch job per chunk, which
-- finds the file in the work directory when it was encoded on this host.
-- When every compile runs on other hosts (hagen.compile_workers = 0) the
-- join's worker reads the chunks from the bucket itself: nothing is
-- fetched to the database host.
CREATE FUNCTION hagen._join_start(q hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	segs jsonb := q.state -> 'manifest' -> 'segments';
	ps jsonb := q.state -> 'plan' -> 'segments';
	counted jsonb;
	jsegs jsonb;
	chunks jsonb;
	missing integer;
	fetches integer := 0;
BEGIN
	SELECT jsonb_object_agg(s ->> 'index', s) INTO counted
	FROM hagen.job c, jsonb_array_elements(c.state -> 'result' -> 'segments') s
	WHERE c.parent_id = q.id AND c.kind = 'chunk' AND c.status = 'succeeded';
	SELECT jsonb_agg(segs -> (i - 1) || jsonb_build_object(
				'fade_frames', (ps -> (i - 1) ->> 'fade_frames')::integer,
				'frames', (counted -> i::text ->> 'frames')::integer,
				'held', (counted -> i::text ->> 'held')::integer) ORDER BY i),
		   min(i) FILTER (WHERE NOT counted ? i::text)
	INTO jsegs, missing
	FROM generate_series(1, jsonb_array_length(segs)) i;
	IF missing IS NOT NULL THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('no chunk counted the frames of segment %s', missing));
	END IF;
	SELECT jsonb_agg(jsonb_build_object('file', c.state ->> 'file', 'key', c.state ->> 'key',
										'first', (c.state ->> 'first')::integer, 'last', (c.state ->> 'last')::integer,
										'what', hagen._chunk_name(c))
					 ORDER BY (c.state ->> 'number')::integer)
	INTO chunks
	FROM hagen.job c WHERE c.parent_id = q.id AND c.kind = 'chunk' AND c.status = 'succeeded';
	IF NOT hagen._compiles_elsewhere() THEN
		INSERT INTO hagen.job (project_id, kind, lane, step, state, deadline_at, parent_id)
		SELECT q.project_id, 'fetch', 'http', 'fetch', c - 'first' - 'last', q.deadline_at, q.id
		FROM jsonb_array_elements(chunks) c;
		GET DIAGNOSTICS fetches = ROW_COUNT;
	END IF;
	PERFORM hagen._compile_progress(q, 'gather');
	RETURN jsonb_build_object('action', 'advance', 'step', CASE WHEN fetches > 0 THEN 'gather' ELSE 'join' END,
		'delay_ms', CASE WHEN fetches > 0 THEN hagen._compile_watchdog_ms() ELSE 0 END,
		'log', format('the %s chunks are encoded: %s frames', jsonb_array_length(chunks),
					  (SELECT sum((c.state -> 'result' ->> 'frames')::bigint) FROM hagen.job c
					   WHERE c.parent_id = q.id AND c.kind = 'chunk' AND c.status = 'succeeded')),
		'state', jsonb_build_object('fetches', fetches, 'join', jsonb_build_object(
			'manifest', q.state -> 'manifest' || jsonb_build_object('task', 'join', 'segments', jsegs,
				'target', jsonb_build_object('width', (q.state -> 'plan' ->> 'width')::integer,
											 'height', (q.state -> 'plan' ->> 'height')::integer,
											 'fps', q.state -> 'plan' ->> 'fps'),
				'chunks', (SELECT jsonb_agg(c - 'key' - 'what') FROM jsonb_array_elements(chunks) c)),
			'inputs', q.state -> 'inputs' || (SELECT jsonb_agg(c - 'first' - 'last') FROM jsonb_array_elements(chunks) c))));
END;
$$;

-- A split compile ended: when it did not succeed its chunks still at work
-- stop; and the chunks stored in the bucket are deleted (a purge of their
-- prefix, once the uploads still in flight have ended).
CREATE FUNCTION hagen._chunks_end(q hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	c hagen.job;
	ws text;
	after timestamptz;
BEGIN
	IF q.status <> 'succeeded' THEN
		FOR c IN SELECT * FROM hagen.job x WHERE x.parent_id = q.id AND x.kind = 'chunk'
				 AND x.status = 'queued' ORDER BY x.id FOR UPDATE
		LOOP
			PERFORM hagen._cancel_job(c);
		END LOOP;
		UPDATE hagen.job x SET cancel_requested = true
		WHERE x.parent_id = q.id AND x.kind = 'chunk' AND x.status = 'running';
	END IF;
	SELECT workspace_id INTO ws FROM hagen.video_project WHERE id = q.project_id;
	-- A compile worker notices within seconds that its chunk was canceled
	-- (its heartbeat fails); an upload runs until its lease ends.
	SELECT max(CASE WHEN x.lane = 'compile' THEN least(x.lease_expires_at, now() + interval '10 seconds')
					ELSE x.lease_expires_at END) INTO after
	FROM hagen.job x WHERE x.parent_id = q.id AND x.kind = 'chunk' AND x.status = 'running';
	INSERT INTO hagen.job (project_id, kind, lane, provider, step, state, run_at)
	VALUES (NULL, 'purge', 'http', 's3', 'list',
			jsonb_build_object('prefix', hagen._chunk_prefix(q, ws), 'project_id', q.project_id,
							   'workspace_id', ws, 'aborts', '[]'::jsonb, 'keys', '[]'::jsonb,
							   'deleted', 0, 'failed', 0, 'pages', 0),
			greatest(now(), least(coalesce(after, now()), now() + interval '1 hour')))
	ON CONFLICT DO NOTHING;
END;
$$;

-- cancel_video skips the job rows a worker holds instead of waiting for
-- them (a deadlock with the worker otherwise); claims and heartbeats see
-- the project canceled.  Replacing it resets its attributes: the API's are
-- applied again.
-- Stops a project's work: queued jobs are canceled at once, running ones as
-- soon as their current effect returns, and provider requests already made
-- get a cancel request.  Completed clips are kept.
CREATE OR REPLACE FUNCTION hagen.cancel_video(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
	j hagen.job;
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	IF p.status = 'completed' THEN
		RAISE EXCEPTION 'video project % is already completed', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'There is nothing to cancel.';
	ELSIF p.status = 'canceled' THEN
		RETURN hagen.video_status(p.id) || '{"note": "already canceled"}';
	END IF;
	UPDATE hagen.video_project v
	SET status = 'canceled', completed_at = now(),
		progress = jsonb_build_object('step', 'canceled', 'label', 'Canceled',
									  'percent', coalesce((v.progress ->> 'percent')::numeric, 0))
	WHERE v.id = p.id;
	-- Jobs whose rows a worker holds right now (recording an outcome, a
	-- claim, a heartbeat) are skipped, not waited for: waiting while this
	-- transaction holds the project's row could deadlock with that worker,
	-- which may need the row too.  They see the project canceled at their
	-- next claim or heartbeat.
	FOR j IN SELECT * FROM hagen.job q WHERE q.project_id = p.id AND q.status = 'queued'
			 AND q.kind <> 'cancel' ORDER BY q.id FOR UPDATE SKIP LOCKED
	LOOP
		PERFORM hagen._cancel_job(j);
	END LOOP;
	UPDATE hagen.job q SET cancel_requested = true
	WHERE q.id IN (SELECT r.id FROM hagen.job r WHERE r.project_id = p.id AND r.status = 'running'
				   AND r.kind <> 'cancel' FOR UPDATE SKIP LOCKED);
	UPDATE hagen.video_clip c SET status = 'canceled'
	WHERE c.project_id = p.id AND c.status IN ('pending', 'processing');
	UPDATE hagen.video_clip c SET transition_status = 'canceled'
	WHERE c.project_id = p.id AND c.transition_status IN ('pending', 'processing');
	PERFORM hagen._log(NULL, p.id, 'info', 'run canceled');
	RETURN hagen.video_status(p.id);
END;
$$;

ALTER FUNCTION hagen.cancel_video(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;


-- 0.4, the engine at scale (issue 15): a project's progress kept step by
-- step in O(1) (counters on the project, the trigger job_progress), claims
-- and outcomes in few statements, no SQL function on the workers' path
-- planned again at every call, waking by lane, several dispatchers, polls
-- that follow the provider.
-- SQL functions that use the project's row type block any ALTER TABLE of
-- it: dropped, and made again below.
DROP FUNCTION hagen._estimate_cents(hagen.video_project);
DROP FUNCTION hagen._spent_today(text);
ALTER TABLE hagen.video_project
	ADD COLUMN run_jobs integer NOT NULL DEFAULT 0,
	ADD COLUMN run_jobs_done integer NOT NULL DEFAULT 0,
	ADD COLUMN run_fraction numeric NOT NULL DEFAULT 0;
DROP TRIGGER video_project_notify ON hagen.video_project;
DROP TRIGGER job_wake ON hagen.job;

ALTER TABLE hagen.job_log DROP CONSTRAINT job_log_job_id_fkey, DROP CONSTRAINT job_log_project_id_fkey;
CREATE FUNCTION hagen._spent_today(workspace text) RETURNS bigint
	LANGUAGE sql STABLE
	RETURN coalesce((SELECT s.cents FROM hagen.workspace_spending s
					 WHERE s.workspace_id = workspace AND s.day = hagen._today()), 0)
		 + coalesce((SELECT sum((j.state ->> 'cost_cents')::integer)
					 FROM hagen.job j JOIN hagen.video_project p ON p.id = j.project_id
					 WHERE p.workspace_id = workspace AND j.status IN ('queued', 'running')
					   AND j.kind IN ('clip', 'transition')), 0);
REVOKE ALL ON FUNCTION hagen._spent_today(text) FROM PUBLIC;
CREATE FUNCTION hagen._estimate_cents(p hagen.video_project) RETURNS integer
	LANGUAGE sql STABLE
	RETURN (SELECT coalesce(sum(c.cost_cents), 0) FROM hagen.video_clip c WHERE c.project_id = p.id)
		   + hagen._run_cost_cents(p);
REVOKE ALL ON FUNCTION hagen._estimate_cents(hagen.video_project) FROM PUBLIC;
CREATE OR REPLACE FUNCTION hagen._log(job bigint, project uuid, level text, message text,
						   detail jsonb DEFAULT '{}') RETURNS void
	LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	INSERT INTO hagen.job_log (job_id, project_id, level, message, detail)
	VALUES (job, project, level, message, coalesce(detail, '{}'));
END;
$$;

CREATE OR REPLACE FUNCTION hagen._touch() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'hagen_touch';
CREATE FUNCTION hagen._delete_logs() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp AS $$
BEGIN
	IF TG_TABLE_NAME = 'job' THEN
		DELETE FROM hagen.job_log l USING gone g WHERE l.job_id = g.id;
	ELSE
		DELETE FROM hagen.job_log l USING gone g WHERE l.project_id = g.id;
	END IF;
	RETURN NULL;
END;
$$;
CREATE TRIGGER job_delete_logs AFTER DELETE ON hagen.job
	REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION hagen._delete_logs();

CREATE TRIGGER video_project_delete_logs AFTER DELETE ON hagen.video_project
	REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION hagen._delete_logs();
REVOKE ALL ON FUNCTION hagen._delete_logs() FROM PUBLIC;
COMMENT ON FUNCTION hagen._wake() IS
	'Wakes the hagenkit workers of every lane when the calling transaction commits.';

CREATE TRIGGER video_project_notify AFTER INSERT ON hagen.video_project
	FOR EACH ROW EXECUTE FUNCTION hagen._notify_project();

CREATE TRIGGER video_project_notify_update AFTER UPDATE ON hagen.video_project
	FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status OR NEW.progress IS DISTINCT FROM OLD.progress)
	EXECUTE FUNCTION hagen._notify_project();

CREATE TRIGGER job_wake BEFORE INSERT OR UPDATE OF status, run_at, lane ON hagen.job
	FOR EACH ROW WHEN (NEW.status = 'queued')
	EXECUTE FUNCTION hagen._wake_trigger();

CREATE OR REPLACE FUNCTION hagen.next_due(lane text) RETURNS bigint
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	t timestamptz;
BEGIN
	-- ORDER BY ... LIMIT 1, not min(): the planner's min() scanned every
	-- queued job of the lane (milliseconds per call under load).
	SELECT least(
		(SELECT run_at FROM hagen.job
		 WHERE status = 'queued' AND job.lane = next_due.lane ORDER BY run_at LIMIT 1),
		(SELECT lease_expires_at FROM hagen.job
		 WHERE status = 'running' AND job.lane = next_due.lane
		 ORDER BY lease_expires_at LIMIT 1)) INTO t;
	IF t IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN greatest(0, ceil(extract(epoch FROM (t - now())) * 1000))::bigint;
END;
$$;

CREATE OR REPLACE FUNCTION hagen.claim_jobs(lane text, max_jobs integer,
								 lease interval DEFAULT '2 minutes', steps text[] DEFAULT NULL)
	RETURNS TABLE (job_id bigint, token bigint, effect jsonb)
	LANGUAGE plpgsql AS $$
DECLARE
	due hagen.job[];
	odd hagen.job[];
	j hagen.job;
	eff jsonb;
	ids bigint[];
	toks bigint[];
	effs jsonb[];
BEGIN
	IF max_jobs IS NULL OR max_jobs <= 0 THEN
		RETURN;
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.job q WHERE q.lane = claim_jobs.lane AND q.status = 'running'
			   AND q.lease_expires_at < now()) THEN
		PERFORM hagen._recover_lane(claim_jobs.lane, true);
	END IF;

	SELECT array_agg(q.job) FILTER (WHERE NOT q.odd), array_agg(q.job) FILTER (WHERE q.odd)
	INTO due, odd
	FROM (SELECT q AS job, (q.deadline_at IS NOT NULL AND q.deadline_at < now()) OR q.cancel_requested
					 -- of a project canceled while this job's row was locked
					 -- (cancel_video skips those rather than wait for them)
					 OR (q.kind <> 'cancel' AND q.project_id IS NOT NULL
						 AND EXISTS (SELECT 1 FROM hagen.video_project v WHERE v.id = q.project_id
									 AND v.status = 'canceled')) AS odd
		  FROM hagen.job q
		  WHERE q.lane = claim_jobs.lane AND q.status = 'queued' AND q.run_at <= now()
			AND (claim_jobs.steps IS NULL OR q.kind || ':' || q.step = ANY (claim_jobs.steps))
		  ORDER BY q.run_at, q.id
		  LIMIT max_jobs
		  FOR UPDATE SKIP LOCKED) q;

	-- A job past its time limit, or of a canceled project, gets no effect.
	FOREACH j IN ARRAY coalesce(odd, '{}') LOOP
		IF j.deadline_at IS NOT NULL AND j.deadline_at < now() THEN
			PERFORM hagen._apply(j, jsonb_build_object('action', 'fail', 'error',
				format('%s job did not finish within its time limit (%s)', j.kind,
					   CASE WHEN j.kind IN ('compile', 'chunk') THEN 'hagen.compile_timeout'
							ELSE 'hagen.clip_timeout' END)));
			-- A request still at the provider is canceled there.
			IF j.request_id IS NOT NULL AND j.step IN ('poll', 'result') THEN
				PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', j.provider, 'cancel',
					jsonb_build_object('request_id', j.request_id, 'for_job', j.id,
									   'model', j.state ->> 'model', 'cancel_url', j.state ->> 'cancel_url'));
			END IF;
		ELSE
			PERFORM hagen._cancel_job(j);
		END IF;
	END LOOP;
	IF due IS NULL THEN
		RETURN;
	END IF;

	-- The effects first, all at once in a subtransaction; should one not be
	-- prepared, one job at a time, so that only that one fails.  Preparing
	-- an effect writes nothing: the jobs are leased below by the transaction
	-- that locked them.  (Leased by a subtransaction, a job's old row would
	-- get a MultiXact for xmax, the lock's and the update's, and its entry
	-- in job_due_idx could not be marked dead by the scans that pass it:
	-- they piled up at the head of the queue until VACUUM, and every claim
	-- and next_due walked them, milliseconds each under a backlog.)
	BEGIN
		SELECT array_agg(d.id), array_agg(hagen._effect(d)) INTO ids, effs FROM unnest(due) AS d;
	EXCEPTION WHEN others THEN
		ids := '{}';
		effs := '{}';
		FOREACH j IN ARRAY due LOOP
			BEGIN
				eff := hagen._effect(j);
			EXCEPTION WHEN others THEN
				PERFORM hagen._apply(j, jsonb_build_object('action', 'fail',
					'error', format('could not prepare step %s: %s', j.step, SQLERRM)));
				CONTINUE;
			END;
			ids := ids || j.id;
			effs := effs || eff;
		END LOOP;
	END;

	WITH leased AS (
		UPDATE hagen.job q
		SET status = 'running', lease_token = nextval('hagen.lease_token_seq'),
			lease_owner = pg_backend_pid(),
			lease_expires_at = now() + greatest(lease, make_interval(secs =>
				coalesce((e.eff ->> 'timeout_ms')::bigint, 60000) / 1000.0 + 60)),
			attempts = q.attempts + 1, total_attempts = q.total_attempts + 1,
			started_at = coalesce(q.started_at, now())
		FROM unnest(ids, effs) AS e(id, eff)
		WHERE q.id = e.id
		RETURNING q.id, q.lease_token, e.eff)
	SELECT array_agg(l.id), array_agg(l.lease_token), array_agg(l.eff) INTO ids, toks, effs
	FROM leased l;
	RETURN QUERY SELECT * FROM unnest(ids, toks, effs);
END;
$$;

CREATE OR REPLACE FUNCTION hagen.complete_job(job_id bigint, token bigint, outcome jsonb)
	RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	RETURN hagen._complete_job(job_id, token, outcome, true);
END;
$$;
CREATE FUNCTION hagen._complete_job(job_id bigint, token bigint, outcome jsonb, careful boolean)
	RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
	o jsonb := coalesce(outcome, '{}');
	decision jsonb;
BEGIN
	SELECT * INTO j FROM hagen.job WHERE id = _complete_job.job_id FOR UPDATE;
	IF NOT FOUND OR j.status <> 'running' OR j.lease_token IS DISTINCT FROM _complete_job.token THEN
		RETURN 'stale';
	END IF;

	o := hagen._read_outcome(o);
	IF careful THEN
		BEGIN
			decision := hagen._interpret(j, o);
		EXCEPTION WHEN others THEN
			decision := jsonb_build_object('action', 'retry',
				'error', format('could not interpret the answer to step %s: %s', j.step, SQLERRM));
		END;
	ELSE
		decision := hagen._interpret(j, o);
	END IF;
	IF decision IS NULL OR NOT decision ? 'action' THEN
		decision := jsonb_build_object('action', 'fail',
			'error', format('no decision for step %s of a %s job', j.step, j.kind));
	END IF;

	-- Canceled: flagged by cancel_video, or of a project canceled while a
	-- worker held this job's row (cancel_video skips those).
	IF j.cancel_requested
	   OR (j.kind <> 'cancel' AND j.project_id IS NOT NULL
		   AND EXISTS (SELECT 1 FROM hagen.video_project v WHERE v.id = j.project_id
					   AND v.status = 'canceled')) THEN
		-- Keep what we learnt (a provider request id above all, or a
		-- multipart upload to abort), then stop.
		IF decision ? 'request_id' OR decision ? 'state' THEN
			j.request_id := coalesce(decision ->> 'request_id', j.request_id);
			j.state := j.state || coalesce(decision -> 'state', '{}');
			UPDATE hagen.job SET request_id = j.request_id, state = j.state WHERE id = j.id;
		END IF;
		PERFORM hagen._cancel_job(j);
		RETURN 'applied';
	END IF;

	PERFORM hagen._apply(j, decision, o);
	RETURN 'applied';
END;
$$;
-- An outcome as the adapters read it: a JSON body is parsed once, so that
-- they see it as jsonb under "body".
CREATE FUNCTION hagen._read_outcome(o jsonb) RETURNS jsonb
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF o ? 'body_text' AND NOT o ? 'body' THEN
		RETURN o || jsonb_build_object('body', hagen._try_jsonb(o ->> 'body_text'));
	END IF;
	RETURN coalesce(o, '{}');
END;
$$;

-- What a log line of a step says of its outcome.
-- (STABLE as jsonb_build_object is, so that it is inlined.)
CREATE FUNCTION hagen._step_summary(step text, attempt integer, outcome jsonb) RETURNS jsonb
	LANGUAGE sql STABLE AS $$
	SELECT jsonb_strip_nulls(jsonb_build_object('step', step, 'attempt', attempt,
		'http_status', outcome -> 'status', 'transport_error', outcome -> 'error',
		'elapsed_ms', outcome -> 'elapsed_ms'))
$$;

-- What every decision does to a job and its log: its state merged with
-- what the decision learnt, its request id kept, its lease given up; the
-- decision's own "log" line; and a line with the step's summary for the
-- caller to fill in.  (_requeued and _finished.)
CREATE FUNCTION hagen._decided(j hagen.job, decision jsonb, outcome jsonb,
							   OUT job hagen.job, OUT lines hagen.job_log[], OUT line hagen.job_log)
	LANGUAGE plpgsql AS $$
BEGIN
	job := j;
	job.state := j.state || coalesce(decision -> 'state', '{}');
	job.request_id := coalesce(decision ->> 'request_id', j.request_id);
	job.lease_token := NULL;
	job.lease_owner := NULL;
	job.lease_expires_at := NULL;
	line.job_id := j.id;
	line.project_id := j.project_id;
	line.detail := hagen._step_summary(j.step, j.attempts, outcome);
	lines := '{}';
	IF decision ? 'log' THEN
		line.level := 'info';
		line.message := decision ->> 'log';
		lines := lines || line;
	END IF;
END;
$$;

-- The job as a decision to advance to a step, or to retry this one after a
-- back-off, leaves it: queued again, its lease given up; and the lines that
-- say so in its log.  NULL (job and lines) for any other decision, and for
-- a retry with no attempts left (_apply fails the job then).  Written by
-- _requeue_write, one job (_apply) or a batch (complete_jobs) at a time.
CREATE FUNCTION hagen._requeued(j hagen.job, decision jsonb, outcome jsonb,
								OUT job hagen.job, OUT lines hagen.job_log[])
	LANGUAGE plpgsql AS $$
DECLARE
	action text := decision ->> 'action';
	delay interval;
	retry_after interval;
	d record;
	l hagen.job_log;
BEGIN
	IF action IS NULL OR action NOT IN ('advance', 'retry')
	   OR (action = 'retry' AND j.attempts >= coalesce((decision ->> 'max_attempts')::integer,
														hagen._max_attempts())) THEN
		RETURN;
	END IF;
	d := hagen._decided(j, decision, outcome);
	job := d.job;
	lines := d.lines;
	l := d.line;
	job.status := 'queued';
	IF action = 'advance' THEN
		delay := coalesce(make_interval(secs => (decision ->> 'delay_ms')::float8 / 1000), '0');
		job.step := coalesce(decision ->> 'step', j.step);
		job.lane := hagen._step_lane(j.kind, job.step);
		job.attempts := CASE WHEN decision ->> 'step' = j.step AND (decision ->> 'keep_attempts')::boolean
							 THEN j.attempts ELSE 0 END;
		job.last_error := NULL;
		job.submit_unconfirmed := coalesce((decision ->> 'unconfirmed')::boolean, false);
		IF decision ->> 'step' IS DISTINCT FROM j.step THEN
			l.level := 'info';
			l.message := format('step %s done; next: %s', j.step, decision ->> 'step');
			lines := lines || l;
		END IF;
	ELSE
		delay := hagen._backoff(j.attempts);
		retry_after := make_interval(secs => (decision ->> 'retry_after_ms')::float8 / 1000);
		IF retry_after IS NOT NULL AND retry_after > delay THEN
			delay := least(retry_after, interval '1 hour');
		END IF;
		job.last_error := decision ->> 'error';
		l.level := 'warning';
		l.message := format('step %s failed (attempt %s), retrying in %s ms: %s', j.step, j.attempts,
							round(extract(epoch FROM delay) * 1000), decision ->> 'error');
		l.detail := l.detail || jsonb_build_object('retry_in_ms', round(extract(epoch FROM delay) * 1000));
		lines := lines || l;
	END IF;
	job.run_at := now() + delay;
END;
$$;

-- Writes jobs as _requeued left them, and their log lines: two statements
-- for any number of jobs.
CREATE FUNCTION hagen._requeue_write(jobs hagen.job[], lines hagen.job_log[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	IF cardinality(jobs) > 0 THEN
		UPDATE hagen.job q
		SET status = r.status, step = r.step, state = r.state, lane = r.lane, request_id = r.request_id,
			attempts = r.attempts, run_at = r.run_at, lease_token = NULL, lease_owner = NULL,
			lease_expires_at = NULL, last_error = r.last_error, submit_unconfirmed = r.submit_unconfirmed
		FROM unnest(jobs) AS r
		WHERE q.id = r.id;
	END IF;
	IF cardinality(lines) > 0 THEN
		INSERT INTO hagen.job_log (job_id, project_id, level, message, detail)
		SELECT l.job_id, l.project_id, l.level, l.message, l.detail FROM unnest(lines) AS l;
	END IF;
END;
$$;

-- The job as a decision to fail it, or to record its success, leaves it,
-- and the lines that say so in its log.  A retry arrives here only with no
-- attempts left (_requeued declined it): the job fails.  Written by
-- _finish_write, one job (_apply) or a batch (complete_jobs) at a time.
CREATE FUNCTION hagen._finished(j hagen.job, decision jsonb, outcome jsonb,
								OUT job hagen.job, OUT lines hagen.job_log[])
	LANGUAGE plpgsql AS $$
DECLARE
	action text := decision ->> 'action';
	err text := decision ->> 'error';
	d record;
	l hagen.job_log;
BEGIN
	IF action = 'retry' THEN
		action := 'fail';
		err := format('gave up on step %s after %s attempts: %s', j.step, j.attempts, err);
	END IF;
	IF action IS NULL OR action NOT IN ('fail', 'succeed') THEN
		RAISE EXCEPTION 'unknown job decision "%"', action;
	END IF;
	d := hagen._decided(j, decision, outcome);
	job := d.job;
	lines := d.lines;
	l := d.line;
	job.finished_at := now();
	IF action = 'fail' THEN
		job.status := 'failed';
		job.last_error := err;
		job.submit_unconfirmed := coalesce((decision ->> 'unconfirmed')::boolean, j.submit_unconfirmed);
		l.level := 'error';
		l.message := err;
	ELSE
		job.status := 'succeeded';
		job.last_error := NULL;
		job.cost_cents := coalesce((decision ->> 'cost_cents')::integer, j.cost_cents);
		l.level := 'info';
		l.message := format('%s job succeeded', j.kind);
	END IF;
	lines := lines || l;
END;
$$;

-- Writes jobs as _finished left them and their log lines, then records
-- their ends (_jobs_finished): a few statements for any number of jobs.
CREATE FUNCTION hagen._finish_write(jobs hagen.job[], lines hagen.job_log[]) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	ended hagen.job[];
BEGIN
	IF cardinality(jobs) = 0 THEN
		RETURN;
	END IF;
	WITH w AS (
		UPDATE hagen.job q
		SET status = r.status, state = r.state, request_id = r.request_id, last_error = r.last_error,
			cost_cents = r.cost_cents, submit_unconfirmed = r.submit_unconfirmed,
			lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, finished_at = r.finished_at
		FROM unnest(jobs) AS r
		WHERE q.id = r.id
		RETURNING q AS job)
	SELECT array_agg(w.job ORDER BY (w.job).project_id, (w.job).id) INTO ended FROM w;
	INSERT INTO hagen.job_log (job_id, project_id, level, message, detail)
	SELECT l.job_id, l.project_id, l.level, l.message, l.detail FROM unnest(lines) AS l;
	PERFORM hagen._jobs_finished(ended);
END;
$$;


CREATE OR REPLACE FUNCTION hagen.complete_jobs(outcomes jsonb) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	x record;
	j hagen.job;
	o jsonb;
	decision jsonb;
	r record;
	n integer := 0;
	try integer;
	given jsonb;
	this jsonb;
	ids bigint[];
	jobs hagen.job[] := '{}';
	lines hagen.job_log[] := '{}';
	ended hagen.job[] := '{}';
	ended_lines hagen.job_log[] := '{}';
	later jsonb[] := '{}';
BEGIN
	BEGIN
		-- The outcomes by job (the first of a job given twice) and the jobs.
		SELECT jsonb_object_agg(e.value ->> 'job_id', e.value), array_agg((e.value ->> 'job_id')::bigint)
		INTO given, ids
		FROM (SELECT e.value FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS e(value, i)
			  ORDER BY i DESC) AS e;
		FOR x IN
			SELECT l.q AS job, l.project_id, l.id,
				   (l.q).kind <> 'cancel' AND EXISTS (SELECT 1 FROM hagen.video_project v
						WHERE v.id = l.project_id AND v.status = 'canceled') AS of_canceled
			FROM (SELECT q, q.project_id, q.id FROM hagen.job q
				  WHERE q.id = ANY (ids)
				  ORDER BY q.project_id, q.id
				  FOR UPDATE) AS l
			ORDER BY l.project_id, l.id
		LOOP
			j := x.job;
			this := given -> j.id::text;
			IF j.status <> 'running' OR j.lease_token IS DISTINCT FROM (this ->> 'token')::bigint THEN
				CONTINUE;
			END IF;
			IF j.kind NOT IN ('clip', 'transition', 'fetch', 'cancel', 'purge', 'cleanup')
			   OR j.cancel_requested OR x.of_canceled THEN
				later := later || this;
				CONTINUE;
			END IF;
			o := hagen._read_outcome(this -> 'outcome');
			decision := hagen._interpret(j, o);
			IF decision IS NULL OR NOT decision ? 'action' OR (decision ->> 'schedule_parts')::boolean THEN
				later := later || this;
				CONTINUE;
			END IF;
			r := hagen._requeued(j, decision, o);
			IF (r.job).id IS NOT NULL THEN
				jobs := jobs || r.job;
				lines := lines || r.lines;
			ELSE
				r := hagen._finished(j, decision, o);
				ended := ended || r.job;
				ended_lines := ended_lines || r.lines;
			END IF;
			n := n + 1;
		END LOOP;
		-- The projects these generations move, all at once in the order of
		-- their ids (the trigger job_progress and _jobs_finished take them in
		-- a few statements): two dispatchers never wait on each other in a
		-- cycle.  (A fetch's project is not taken: a compile worker holds its
		-- compile's row, then the project's.)
		PERFORM 1 FROM hagen.video_project v
		WHERE v.id IN (SELECT q.project_id FROM unnest(jobs || ended) AS q
					   WHERE q.kind IN ('clip', 'transition'))
		ORDER BY v.id
		FOR UPDATE;
		PERFORM hagen._requeue_write(jobs, lines);
		PERFORM hagen._finish_write(ended, ended_lines);
		FOR x IN SELECT unnest(later) AS value LOOP
			IF hagen._complete_job((x.value ->> 'job_id')::bigint, (x.value ->> 'token')::bigint,
								   x.value -> 'outcome', false) = 'applied' THEN
				n := n + 1;
			END IF;
		END LOOP;
		RETURN n;
	EXCEPTION WHEN others THEN
		n := 0;
	END;
	FOR x IN SELECT o.value FROM jsonb_array_elements(outcomes) AS o
			 LEFT JOIN hagen.job q ON q.id = (o.value ->> 'job_id')::bigint
			 ORDER BY q.project_id, q.id
	LOOP
		FOR try IN 1 .. 3 LOOP
			BEGIN
				IF hagen.complete_job((x.value ->> 'job_id')::bigint, (x.value ->> 'token')::bigint,
									  x.value -> 'outcome') = 'applied' THEN
					n := n + 1;
				END IF;
				EXIT;
			EXCEPTION
				WHEN deadlock_detected OR lock_not_available OR serialization_failure THEN
					IF try = 3 THEN
						PERFORM hagen.fail_job((x.value ->> 'job_id')::bigint, (x.value ->> 'token')::bigint,
							'the outcome of this step could not be recorded: ' || SQLERRM);
					END IF;
				WHEN others THEN
					PERFORM hagen.fail_job((x.value ->> 'job_id')::bigint, (x.value ->> 'token')::bigint,
						'the outcome of this step could not be recorded: ' || SQLERRM);
					EXIT;
			END;
		END LOOP;
	END LOOP;
	RETURN n;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._apply(j hagen.job, decision jsonb, outcome jsonb DEFAULT NULL)
	RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	r record;
BEGIN
	r := hagen._requeued(j, decision, outcome);
	IF (r.job).id IS NOT NULL THEN
		PERFORM hagen._requeue_write(ARRAY[r.job], r.lines);
		IF (decision ->> 'schedule_parts')::boolean THEN
			PERFORM hagen._upload_schedule(j.id);
		END IF;
		RETURN;
	END IF;
	r := hagen._finished(j, decision, outcome);
	PERFORM hagen._finish_write(ARRAY[r.job], r.lines);
END;
$$;

CREATE OR REPLACE FUNCTION hagen._cancel_job(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	UPDATE hagen.job
	SET status = 'canceled', lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL,
		finished_at = now(), last_error = 'canceled'
	WHERE id = j.id
	RETURNING * INTO j;
	PERFORM hagen._log(j.id, j.project_id, 'info', format('%s job canceled', j.kind),
					   jsonb_build_object('step', j.step));
	IF j.request_id IS NOT NULL AND j.kind IN ('clip', 'transition')
	   AND j.step IN ('submit', 'poll', 'result') THEN
		PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', j.provider, 'cancel',
			jsonb_build_object('request_id', j.request_id, 'for_job', j.id, 'model', j.state ->> 'model',
							   'cancel_url', j.state ->> 'cancel_url'));
	END IF;
	PERFORM hagen._job_finished(j);
END;
$$;

CREATE OR REPLACE FUNCTION hagen._set_progress(project uuid, step text, label text, percent numeric)
	RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	UPDATE hagen.video_project p
	SET progress = jsonb_build_object('step', coalesce(_set_progress.step, p.progress ->> 'step'),
		'label', coalesce(_set_progress.label, p.progress ->> 'label'),
		'percent', greatest(coalesce((p.progress ->> 'percent')::numeric, 0),
							least(100, round(coalesce(_set_progress.percent, 0), 1))))
	WHERE p.id = project;
END;
$$;

-- Records the end of jobs on their clips or projects and moves the projects
-- on: the clips and transitions of a batch with one UPDATE each, their
-- projects with one (_projects_moved); the ends of other kinds one by one.
CREATE FUNCTION hagen._jobs_finished(js hagen.job[]) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
	moves hagen.project_move[];
	project uuid;
	clips boolean := false;
	transitions boolean := false;
	fetches boolean := false;
BEGIN
	FOREACH j IN ARRAY js LOOP
		clips := clips OR j.kind = 'clip';
		transitions := transitions OR j.kind = 'transition';
		fetches := fetches OR j.kind = 'fetch';
		IF j.state ->> 'upload_id' IS NOT NULL AND j.kind IN ('clip', 'transition', 'compile', 'fetch', 'chunk')
		   AND j.status <> 'succeeded' AND j.state ->> 'upload_done' IS NULL THEN
			PERFORM hagen._upload_abandon(j);
		END IF;
		CASE j.kind
		WHEN 'compile' THEN
			PERFORM hagen._compile_finished(j);
		WHEN 'chunk' THEN
			PERFORM hagen._chunk_finished(j);
		WHEN 'upload_part' THEN
			PERFORM hagen._upload_part_finished(j);
		ELSE
			NULL;
		END CASE;
	END LOOP;

	IF clips THEN
		-- Clips: the projects' rows first (whoever changes the clips of a
		-- project holds it, so the status read here is the one its counts hold),
		-- in the order of their ids.
		PERFORM 1 FROM hagen.video_project v
		WHERE v.id IN (SELECT f.project_id FROM unnest(js) AS f WHERE f.kind = 'clip')
		ORDER BY v.id
		FOR UPDATE;
		WITH f AS (
			SELECT f.clip_id, f.project_id, f.cost_cents, f.last_error, f.state ->> 'url' AS url,
				   CASE f.status WHEN 'succeeded' THEN 'completed' ELSE f.status END AS st
			FROM unnest(js) AS f WHERE f.kind = 'clip'),
		changed AS (
			UPDATE hagen.video_clip c
			SET status = CASE WHEN c.status = 'canceled' AND f.st <> 'completed' THEN c.status ELSE f.st END,
				clip_url = CASE WHEN f.st = 'completed' THEN f.url ELSE c.clip_url END,
				cost_cents = c.cost_cents + f.cost_cents,
				error_message = CASE WHEN f.st = 'failed' THEN f.last_error ELSE NULL END
			FROM hagen.video_clip o, f
			WHERE c.id = f.clip_id AND o.id = c.id
			RETURNING c.id, o.status AS was, c.status AS now_st)
		SELECT array_agg(ROW(f.project_id, NULL, 0, 0,
				(c.now_st IS NOT DISTINCT FROM 'completed')::integer - (c.was IS NOT DISTINCT FROM 'completed')::integer,
				coalesce(c.now_st IN ('failed', 'canceled'), false)::integer
					- coalesce(c.was IN ('failed', 'canceled'), false)::integer,
				f.cost_cents, true)::hagen.project_move)
		INTO moves
		FROM f LEFT JOIN changed c ON c.id = f.clip_id;
	END IF;

	IF transitions THEN
		UPDATE hagen.video_clip c
		SET transition_status = CASE WHEN c.transition_status = 'canceled' AND f.st <> 'completed'
									 THEN c.transition_status ELSE f.st END,
			transition_clip_url = CASE WHEN f.st = 'completed' THEN f.url ELSE c.transition_clip_url END,
			cost_cents = c.cost_cents + f.cost_cents
		FROM (SELECT f.clip_id, f.cost_cents, f.state ->> 'url' AS url,
					 CASE f.status WHEN 'succeeded' THEN 'completed' ELSE f.status END AS st
			  FROM unnest(js) AS f WHERE f.kind = 'transition') AS f
		WHERE c.id = f.clip_id;
		moves := coalesce(moves, '{}') || ARRAY(
			SELECT ROW(f.project_id, NULL, 0, 0, 0, 0, f.cost_cents, true)::hagen.project_move
			FROM unnest(js) AS f WHERE f.kind = 'transition');
	END IF;

	-- (The jobs' own ends were counted by the trigger job_progress.)
	IF cardinality(moves) > 0 THEN
		PERFORM hagen._projects_moved(moves);
	END IF;
	-- Fetches: their compiles' rows (no project of theirs is held here).
	IF fetches THEN
		PERFORM hagen._fetches_finished(js);
	END IF;
	FOR project IN
		SELECT v.id FROM hagen.video_project v
		WHERE v.id IN (SELECT f.project_id FROM unnest(js) AS f)
		  AND v.status IN ('completed', 'failed', 'canceled')
	LOOP
		PERFORM hagen._cleanup_if_settled(project);
	END LOOP;
END;
$$;


CREATE OR REPLACE FUNCTION hagen._job_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	PERFORM hagen._jobs_finished(ARRAY[j]);
END;
$$;
CREATE OR REPLACE FUNCTION hagen._job_fraction(j hagen.job) RETURNS numeric
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF j.status NOT IN ('queued', 'running') THEN
		RETURN 1.0;
	ELSIF j.step = 'upload_parts' THEN
		RETURN 0.9 + 0.08 * (SELECT count(*) FROM jsonb_object_keys(j.state -> 'parts'))
					 / greatest((j.state ->> 'part_count')::numeric, 1);
	END IF;
	RETURN CASE j.step
		WHEN 'image_fetch' THEN 0.02 WHEN 'image_initiate' THEN 0.04 WHEN 'image_put' THEN 0.06
		WHEN 'submit' THEN 0.08
		WHEN 'poll' THEN CASE
			WHEN j.state ->> 'provider_progress' ~ '^[0-9.]+$'
				THEN 0.1 + 0.7 * least((j.state ->> 'provider_progress')::numeric, 100) / 100
			WHEN j.state ->> 'provider_status' = 'IN_PROGRESS' THEN 0.45
			ELSE 0.12 END
		WHEN 'result' THEN 0.8 WHEN 'download' THEN 0.85 WHEN 'store' THEN 0.92
		WHEN 'upload_create' THEN 0.9
		WHEN 'upload_complete' THEN 0.98 WHEN 'upload_check' THEN 0.98
		ELSE 0 END;
END;
$$;
CREATE FUNCTION hagen._count_run(project uuid) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	UPDATE hagen.video_project v
	SET clip_count = s.n, completed_clips = s.ok, failed_clips = s.bad, actual_cost_cents = s.cost,
		run_jobs = r.n, run_jobs_done = r.done, run_fraction = r.fraction
	FROM (SELECT count(*) AS n, count(*) FILTER (WHERE status = 'completed') AS ok,
				 count(*) FILTER (WHERE status IN ('failed', 'canceled')) AS bad,
				 coalesce(sum(cost_cents), 0) AS cost
		  FROM hagen.video_clip WHERE project_id = project) AS s,
		 (SELECT count(*) AS n, count(*) FILTER (WHERE q.status NOT IN ('queued', 'running')) AS done,
				 coalesce(sum(hagen._job_fraction(q)), 0) AS fraction
		  FROM hagen.job q JOIN hagen.video_project p ON p.id = q.project_id
		  WHERE q.project_id = project AND q.kind IN ('clip', 'transition')
			AND q.created_at >= p.started_at) AS r
	WHERE v.id = project;
END;
$$;

-- What changed in a generating project: d_fraction (how much further one
-- of its generation jobs came), d_done (jobs that ended), d_completed and
-- d_failed (clips that completed, or failed or were canceled; negative when
-- one left that state), d_cost (cents).  job_created: when the job that
-- changed was queued (NULL for none); moved: whether the progress is to be
-- set again.
CREATE TYPE hagen.project_move AS (
	project_id	uuid,
	job_created	timestamptz,
	d_fraction	numeric,
	d_done		integer,
	d_completed	integer,
	d_failed	integer,
	d_cost		integer,
	moved		boolean
);

-- Moves generating projects on by what changed, all with one UPDATE of their
-- rows, locked in the order of their ids.  The change of a job counts in
-- the run's counters only if the job belongs to the current run (queued
-- after it started).  Where a move is marked moved, the progress is set
-- from the counters and, once no generation job is live, the run ends
-- (_run_ended).  O(1) a project whatever its size.
CREATE FUNCTION hagen._projects_moved(moves hagen.project_move[]) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	project uuid;
BEGIN
	FOR project IN
		WITH p AS (
			SELECT v.id, v.started_at FROM hagen.video_project v
			WHERE v.id IN (SELECT m.project_id FROM unnest(moves) AS m) AND v.status = 'generating'
			ORDER BY v.id
			FOR UPDATE),
		a AS (
			SELECT m.project_id,
				   coalesce(sum(m.d_fraction) FILTER (WHERE m.job_created >= p.started_at), 0) AS fraction,
				   coalesce(sum(m.d_done) FILTER (WHERE m.job_created >= p.started_at), 0) AS done,
				   sum(m.d_completed) AS completed, sum(m.d_failed) AS failed, sum(m.d_cost) AS cost,
				   bool_or(m.moved) AS moved
			FROM unnest(moves) AS m JOIN p ON p.id = m.project_id
			GROUP BY m.project_id)
		UPDATE hagen.video_project v
		SET run_fraction = v.run_fraction + a.fraction,
			run_jobs_done = v.run_jobs_done + a.done,
			completed_clips = v.completed_clips + a.completed,
			failed_clips = v.failed_clips + a.failed,
			actual_cost_cents = v.actual_cost_cents + a.cost,
			progress = CASE
				WHEN NOT a.moved OR v.run_jobs_done + a.done >= v.run_jobs THEN v.progress
				ELSE jsonb_build_object('step', 'generating',
					'label', format('Generating clips (%s of %s done)', v.run_jobs_done + a.done, v.run_jobs),
					'percent', greatest(coalesce((v.progress ->> 'percent')::numeric, 0),
						least(100, round(coalesce(85.0 * ((v.run_fraction + a.fraction) / v.run_jobs), 0), 1))))
				END
		FROM a
		WHERE v.id = a.project_id
		RETURNING CASE WHEN a.moved AND v.run_jobs_done >= v.run_jobs THEN v.id END
	LOOP
		IF project IS NOT NULL THEN
			PERFORM hagen._run_ended(project);
		END IF;
	END LOOP;
END;
$$;

-- No generation job of a generating project's run is live: compile, or
-- fail when no clip completed.
CREATE FUNCTION hagen._run_ended(project uuid) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
	errors text;
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = project AND v.status = 'generating';
	IF NOT FOUND OR p.run_jobs_done < p.run_jobs THEN
		RETURN;
	END IF;
	IF p.completed_clips = 0 THEN
		SELECT string_agg(format('clip %s: %s', c.sequence_order,
								 coalesce(c.error_message, c.status)), '; ' ORDER BY c.sequence_order)
		INTO errors FROM hagen.video_clip c WHERE c.project_id = p.id;
		UPDATE hagen.video_project v
		SET status = 'failed', completed_at = now(),
			error_message = format('all %s clips failed: %s', p.clip_count, errors),
			progress = jsonb_build_object('step', 'failed', 'label', 'Failed',
				'percent', coalesce((v.progress ->> 'percent')::numeric, 0))
		WHERE v.id = p.id;
		PERFORM hagen._log(NULL, p.id, 'error', 'run failed: no clip completed');
		RETURN;
	END IF;

	UPDATE hagen.video_project v SET status = 'compiling' WHERE v.id = p.id RETURNING * INTO p;
	PERFORM hagen._compile_queue(p);
END;
$$;


CREATE OR REPLACE FUNCTION hagen._advance_project(project uuid) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	PERFORM 1 FROM hagen.video_project v WHERE v.id = project AND v.status = 'generating' FOR UPDATE;
	IF FOUND THEN
		PERFORM hagen._count_run(project);
		PERFORM hagen._project_moved(project);
	END IF;
END;
$$;
CREATE FUNCTION hagen._project_moved(project uuid, job_created timestamptz DEFAULT NULL,
									 d_fraction numeric DEFAULT 0, d_done integer DEFAULT 0,
									 d_completed integer DEFAULT 0, d_failed integer DEFAULT 0,
									 d_cost integer DEFAULT 0, moved boolean DEFAULT true)
	RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	PERFORM hagen._projects_moved(ARRAY[ROW(project, job_created, d_fraction, d_done, d_completed,
											d_failed, d_cost, moved)::hagen.project_move]);
END;
$$;

CREATE FUNCTION hagen._job_progress() RETURNS trigger
	LANGUAGE plpgsql AS $$
DECLARE
	moves hagen.project_move[];
BEGIN
	SELECT array_agg(d) INTO moves FROM (
		SELECT ROW(n.project_id, n.created_at,
				   hagen._job_fraction(n) - hagen._job_fraction(o),
				   (o.status IN ('queued', 'running'))::integer - (n.status IN ('queued', 'running'))::integer,
				   0, 0, 0,
				   n.status IN ('queued', 'running')
				   AND (n.step IS DISTINCT FROM o.step
						OR n.state ->> 'provider_status' IS DISTINCT FROM o.state ->> 'provider_status'
						OR n.state ->> 'provider_progress' IS DISTINCT FROM o.state ->> 'provider_progress'
						OR (n.step = 'upload_parts' AND n.state -> 'parts' IS DISTINCT FROM o.state -> 'parts'
							AND (SELECT count(*) FROM jsonb_object_keys(n.state -> 'parts'))
								< (n.state ->> 'part_count')::integer)))::hagen.project_move AS d
		FROM hagen_new_jobs n JOIN hagen_old_jobs o ON o.id = n.id
		WHERE n.kind IN ('clip', 'transition')
		  AND ((o.status IN ('queued', 'running')) IS DISTINCT FROM (n.status IN ('queued', 'running'))
			   OR o.step IS DISTINCT FROM n.step
			   OR o.state -> 'provider_status' IS DISTINCT FROM n.state -> 'provider_status'
			   OR o.state -> 'provider_progress' IS DISTINCT FROM n.state -> 'provider_progress'
			   OR o.state -> 'parts' IS DISTINCT FROM n.state -> 'parts')) AS m
	WHERE (m.d).d_fraction <> 0 OR (m.d).d_done <> 0 OR (m.d).moved;
	IF moves IS NOT NULL THEN
		PERFORM hagen._projects_moved(moves);
	END IF;
	RETURN NULL;
END;
$$;
CREATE TRIGGER job_progress AFTER UPDATE ON hagen.job
	REFERENCING OLD TABLE AS hagen_old_jobs NEW TABLE AS hagen_new_jobs
	FOR EACH STATEMENT
	EXECUTE FUNCTION hagen._job_progress();
CREATE OR REPLACE FUNCTION hagen._upload_part_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.job;
BEGIN
	SELECT * INTO p FROM hagen.job WHERE id = j.parent_id FOR UPDATE;
	IF NOT FOUND OR p.step <> 'upload_parts' OR p.status NOT IN ('queued', 'running')
	   OR p.state ->> 'upload_id' IS DISTINCT FROM j.state ->> 'upload_id' THEN
		RETURN;
	END IF;
	IF j.status = 'succeeded' THEN
		p.state := jsonb_set(p.state, ARRAY['parts', j.state ->> 'part'], j.state -> 'etag');
		UPDATE hagen.job SET state = p.state WHERE id = p.id;
		IF (SELECT count(*) FROM jsonb_object_keys(p.state -> 'parts'))
		   < (p.state ->> 'part_count')::integer THEN
			PERFORM hagen._upload_schedule(p.id);
			-- (A clip's or transition's progress moves with its parts by
			-- the trigger job_progress; a compile's here.)
			IF p.kind = 'compile' THEN
				PERFORM hagen._compile_progress(p, 'store',
					(SELECT count(*) FROM jsonb_object_keys(p.state -> 'parts'))
					/ greatest((p.state ->> 'part_count')::numeric, 1));
			END IF;
			RETURN;
		END IF;
	END IF;
	UPDATE hagen.job SET run_at = now() WHERE id = p.id AND status = 'queued';
END;
$$;

-- Polls that follow the provider (70_generation.sql).
CREATE INDEX job_generation_ms_idx ON hagen.job (provider, (state ->> 'model'), id)
	WHERE state ? 'generation_ms';
DROP FUNCTION hagen._poll_delay_ms(hagen.job);
CREATE FUNCTION hagen._poll_interval_ms() RETURNS bigint
	LANGUAGE sql STABLE
	RETURN greatest(1, extract(epoch FROM hagen._setting_interval('hagen.poll_interval', '2 seconds'))
					   * 1000)::bigint;

CREATE FUNCTION hagen._now_ms() RETURNS bigint
	LANGUAGE sql VOLATILE
	RETURN (extract(epoch FROM clock_timestamp()) * 1000)::bigint;

CREATE FUNCTION hagen._typical_generation_ms(provider text, model text) RETURNS bigint
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	t double precision;
BEGIN
	SELECT CASE WHEN count(*) >= 3 THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY g) END INTO t
	FROM (SELECT (q.state ->> 'generation_ms')::double precision AS g FROM hagen.job q
		  WHERE q.provider = _typical_generation_ms.provider
			AND q.state ->> 'model' = _typical_generation_ms.model AND q.state ? 'generation_ms'
		  ORDER BY q.id DESC LIMIT 20) AS recent;
	RETURN round(t)::bigint;
END;
$$;

CREATE FUNCTION hagen._poll_delay_ms(st jsonb, now_ms bigint) RETURNS bigint
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base numeric := hagen._poll_interval_ms();
	cap numeric := 8 * hagen._poll_interval_ms();
	since numeric := (st ->> 'generating_since_ms')::numeric;
	typical numeric := nullif((st ->> 'typical_ms')::numeric, 0);
	elapsed numeric;
	progress numeric;
	remaining numeric;
	margin numeric;
BEGIN
	IF since IS NULL THEN
		-- In the provider's queue (or not known to generate yet).
		RETURN least(cap, base * power(1.5, greatest(coalesce((st ->> 'queue_polls')::integer, 1) - 1, 0))
						  * (1 + least(coalesce((st ->> 'queue_position')::numeric, 0), 3)))::bigint;
	END IF;
	elapsed := greatest(now_ms - since, 0);
	IF st ->> 'provider_progress' ~ '^[0-9]+(\.[0-9]+)?$' THEN
		progress := (st ->> 'provider_progress')::numeric;
	END IF;
	IF progress > 0 AND progress < 100 AND elapsed > 0 THEN
		remaining := elapsed * (100 - progress) / progress;
		margin := greatest(base, 0.05 * (elapsed + remaining));
		IF remaining > 2 * margin THEN
			RETURN ((remaining - margin) / 2)::bigint;
		END IF;
	ELSIF typical IS NOT NULL THEN
		remaining := typical - elapsed;
		margin := greatest(base, 0.05 * typical);
		IF remaining > margin THEN
			RETURN (remaining - margin)::bigint;
		END IF;
	ELSE
		RETURN least(cap, base * power(1.5, greatest(coalesce((st ->> 'polls')::integer, 1)
													- coalesce((st ->> 'queue_polls')::integer, 0) - 1, 0)))::bigint;
	END IF;
	-- Near the expected end, or past it: the interval, growing as it runs
	-- late (a quarter of the delay so far).
	RETURN least(cap, greatest(base, -remaining / 4))::bigint;
END;
$$;

CREATE FUNCTION hagen._poll_again(j hagen.job, provider_status text, queue_position jsonb,
								  progress jsonb, generating boolean, since_ms bigint DEFAULT NULL)
	RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	now_ms bigint := hagen._now_ms();
	st jsonb;
BEGIN
	st := jsonb_strip_nulls(jsonb_build_object(
		'provider_status', provider_status, 'queue_position', queue_position,
		'provider_progress', progress,
		'polls', coalesce((j.state ->> 'polls')::integer, 0) + 1,
		'polled_ms', now_ms,
		'queue_polls', CASE WHEN NOT generating
							THEN coalesce((j.state ->> 'queue_polls')::integer, 0) + 1 END,
		'generating_since_ms', CASE WHEN generating AND NOT j.state ? 'generating_since_ms'
			THEN coalesce(since_ms,
						  (now_ms + coalesce((j.state ->> 'polled_ms')::bigint,
											 (j.state ->> 'submitted_ms')::bigint, now_ms)) / 2) END,
		'typical_ms', CASE WHEN generating AND NOT j.state ? 'typical_ms'
			THEN coalesce(hagen._typical_generation_ms(j.provider, j.state ->> 'model'), 0) END));
	RETURN jsonb_build_object('action', 'advance', 'step', 'poll',
							  'delay_ms', hagen._poll_delay_ms(j.state || st, now_ms), 'state', st);
END;
$$;

CREATE FUNCTION hagen._poll_done(j hagen.job) RETURNS jsonb
	LANGUAGE sql VOLATILE
	RETURN jsonb_strip_nulls(jsonb_build_object('polled_ms', hagen._now_ms(),
		'generation_ms', hagen._now_ms() - coalesce((j.state ->> 'generating_since_ms')::bigint,
													(j.state ->> 'submitted_ms')::bigint)));
CREATE OR REPLACE FUNCTION hagen._fal_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	b jsonb := o -> 'body';
	req text;
	msg text := hagen._error_text(o);
BEGIN
	IF j.step LIKE 'image\_%' THEN
		RETURN hagen._fal_upload_interpret(j, o);
	END IF;
	CASE j.step
	WHEN 'submit' THEN
		req := coalesce(CASE WHEN jsonb_typeof(b -> 'request_id') = 'string' THEN b ->> 'request_id' END,
						o -> 'headers' ->> 'x-fal-request-id');
		IF status BETWEEN 200 AND 299 AND req IS NOT NULL THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'request_id', req,
				'delay_ms', hagen._poll_interval_ms(),
				'log', format('submitted to Fal.ai as request %s', req),
				'state', jsonb_strip_nulls(jsonb_build_object('request_id', req,
					'submitted_ms', hagen._now_ms(),
					'status_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'status_url' END,
					'response_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'response_url' END,
					'cancel_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'cancel_url' END)));
		END IF;
		-- Certainly not received: safe to send again.
		IF status IN (429, 503) OR (status = 0 AND o ->> 'phase' = 'connect') THEN
			RETURN hagen._transient(o, 'submit to Fal.ai');
		END IF;
		IF status IN (400, 401, 403, 404, 422) OR (status BETWEEN 400 AND 499) THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai refused the request (HTTP %s): %s', status, coalesce(msg, 'no detail')));
		END IF;
		-- The request may have arrived (and be billed): never send it twice
		-- on our own.
		IF coalesce(hagen._setting('hagen.resubmit_unconfirmed', 'off')::boolean, false) THEN
			RETURN jsonb_build_object('action', 'retry', 'unconfirmed', true,
				'error', format('submit to Fal.ai unconfirmed (%s); sending it again as configured',
								coalesce(msg, 'no answer')));
		END IF;
		RETURN jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to Fal.ai unconfirmed: %s. The request may have reached Fal.ai and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
								 ELSE format('HTTP %s%s', status, coalesce(': ' || msg, '')) END));
	WHEN 'poll' THEN
		IF status = 202 OR (status = 200 AND jsonb_typeof(b) = 'object'
							AND b ->> 'status' IN ('IN_QUEUE', 'IN_PROGRESS')) THEN
			-- Still queued or generating: no log line, the job keeps count.
			RETURN hagen._poll_again(j, b ->> 'status', b -> 'queue_position', NULL,
									 coalesce(b ->> 'status' = 'IN_PROGRESS', false));
		ELSIF status = 200 THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'result',
				'state', jsonb_strip_nulls(jsonb_build_object('provider_status', 'COMPLETED',
					'provider_error', b ->> 'error', 'provider_error_type', b ->> 'error_type'))
					|| CASE WHEN b ->> 'error' IS NULL THEN hagen._poll_done(j) ELSE '{}' END);
		ELSIF status = 404 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai does not know request %s (HTTP 404)', j.request_id));
		END IF;
		RETURN coalesce(hagen._transient(o, 'Fal.ai status'),
			jsonb_build_object('action', 'fail',
				'error', format('Fal.ai status of request %s failed (HTTP %s): %s',
								j.request_id, status, coalesce(msg, 'no detail'))));
	WHEN 'result' THEN
		IF status BETWEEN 200 AND 299 THEN
			IF jsonb_typeof(b) = 'object' AND jsonb_typeof(b -> 'video') = 'object'
			   AND jsonb_typeof(b -> 'video' -> 'url') = 'string' THEN
				RETURN jsonb_build_object('action', 'advance', 'step', 'download',
					'state', jsonb_build_object('video_url', b -> 'video' ->> 'url'));
			ELSIF b IS NULL THEN
				RETURN jsonb_build_object('action', 'retry',
					'error', 'Fal.ai result is not valid JSON: ' || coalesce(left(o ->> 'body_text', 100), ''));
			END IF;
			RETURN jsonb_build_object('action', 'fail',
				'error', 'Fal.ai result has no video.url: ' || left(b::text, 300));
		ELSIF status = 400 AND msg ~* 'in progress' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll',
									  'delay_ms', hagen._poll_delay_ms(j.state, hagen._now_ms()));
		ELSIF status BETWEEN 400 AND 499 AND status <> 429 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai could not generate the video (HTTP %s): %s', status,
								coalesce(msg, j.state ->> 'provider_error', 'no detail')));
		ELSIF j.state ? 'provider_error' AND status >= 500 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai could not generate the video: %s (%s)',
								coalesce(msg, j.state ->> 'provider_error'),
								coalesce(j.state ->> 'provider_error_type', 'HTTP ' || status)));
		END IF;
		RETURN hagen._transient(o, 'Fal.ai result');
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai step "%"', j.step;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._xai_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	b jsonb := o -> 'body';
	st text;
	msg text := hagen._error_text(o);
BEGIN
	IF j.step = 'submit' THEN
		IF status = 200 AND jsonb_typeof(b -> 'request_id') = 'string' AND b ->> 'request_id' <> '' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll',
				'delay_ms', hagen._poll_interval_ms(),
				'request_id', b ->> 'request_id',
				'log', format('submitted to xAI as request %s', b ->> 'request_id'),
				'state', jsonb_build_object('request_id', b ->> 'request_id',
											'submitted_ms', hagen._now_ms()));
		ELSIF status IN (429, 503) OR (status = 0 AND o ->> 'phase' = 'connect') THEN
			RETURN hagen._transient(o, 'submit to xAI');
		ELSIF status BETWEEN 400 AND 499 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('xAI refused the request (HTTP %s): %s', status, coalesce(msg, 'no detail')));
		END IF;
		RETURN jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to xAI unconfirmed: %s. The request may have reached xAI and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
								 ELSE format('HTTP %s%s', status, coalesce(': ' || msg, '')) END));
	END IF;

	-- poll (and result, which is the same request).  xAI has no queue
	-- state: a request generates from its submit on.
	IF status = 202 THEN
		RETURN hagen._poll_again(j, 'pending', NULL, b -> 'progress', true,
								 (j.state ->> 'submitted_ms')::bigint);
	ELSIF status = 404 THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('xAI does not know request %s (HTTP 404)', j.request_id));
	ELSIF status <> 200 THEN
		RETURN coalesce(hagen._transient(o, 'xAI status'),
			jsonb_build_object('action', 'fail',
				'error', format('xAI status of request %s failed (HTTP %s): %s', j.request_id, status,
								coalesce(msg, 'no detail'))));
	ELSIF jsonb_typeof(b) <> 'object' THEN
		RETURN jsonb_build_object('action', 'retry',
			'error', 'xAI answered with a body that is not a JSON object');
	END IF;
	st := coalesce(b ->> 'status', CASE WHEN b -> 'video' ->> 'url' <> '' THEN 'done' END, 'pending');
	IF st = 'done' THEN
		IF (b -> 'video' ->> 'respect_moderation')::boolean IS FALSE THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', 'xAI blocked the video by content moderation');
		ELSIF coalesce(b -> 'video' ->> 'url', '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error', 'xAI result has no video.url');
		END IF;
		-- What xAI charged, when it says (1 USD = 10^10 ticks, 1 cent = 10^8).
		RETURN jsonb_build_object('action', 'advance', 'step', 'download',
			'state', jsonb_strip_nulls(jsonb_build_object('video_url', b -> 'video' ->> 'url',
				'provider_duration', b -> 'video' -> 'duration',
				'actual_cost_cents', CASE WHEN b -> 'usage' ->> 'cost_in_usd_ticks' ~ '^[0-9]+$'
										  THEN ceil((b -> 'usage' ->> 'cost_in_usd_ticks')::numeric / 1e8)::integer END))
				|| hagen._poll_done(j));
	ELSIF st = 'failed' THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('xAI could not generate the video (%s): %s',
							coalesce(b -> 'error' ->> 'code', 'failed'),
							coalesce(b -> 'error' ->> 'message', 'no detail')));
	ELSIF st = 'expired' THEN
		RETURN jsonb_build_object('action', 'fail', 'error', format('xAI request %s expired', j.request_id));
	END IF;
	RETURN hagen._poll_again(j, st, NULL, b -> 'progress', true, (j.state ->> 'submitted_ms')::bigint);
END;
$$;

REVOKE ALL ON FUNCTION hagen._complete_job(bigint, bigint, jsonb, boolean), hagen._count_run(uuid),
	hagen._project_moved(uuid, timestamptz, numeric, integer, integer, integer, integer, boolean),
	hagen._job_progress(), hagen._poll_interval_ms(), hagen._now_ms(),
	hagen._typical_generation_ms(text, text), hagen._poll_delay_ms(jsonb, bigint),
	hagen._poll_again(hagen.job, text, jsonb, jsonb, boolean, bigint), hagen._poll_done(hagen.job)
	FROM PUBLIC;

-- Runs in flight count from here on.
SELECT hagen._count_run(id) FROM hagen.video_project WHERE status = 'generating';

-- Jobs are written uncompressed up to a page: pglz compressed a job's ~2 kB
-- at every step and decompressed it at every read of its state.  Larger
-- states (a compile's) are compressed with lz4 where the server has it.
ALTER TABLE hagen.job SET (toast_tuple_target = 8160);
DO $$
BEGIN
	ALTER TABLE hagen.job ALTER COLUMN state SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
	NULL;
END;
$$;

-- (PL/pgSQL: a SQL function with a query for body is parsed and planned at
-- every call.)
CREATE OR REPLACE FUNCTION hagen._fal_image_steps(images text[]) RETURNS jsonb
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	RETURN (SELECT jsonb_agg(jsonb_build_object('url', u) ORDER BY first)
			FROM (SELECT u, min(o) AS first FROM unnest(images) WITH ORDINALITY AS x(u, o)
				  WHERE u IS NOT NULL GROUP BY u) AS distinct_images);
END;
$$;

-- Functions created above are granted to no one, as at install
-- (src/sql/90_privileges.sql); keep this section last.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA hagen FROM PUBLIC;
