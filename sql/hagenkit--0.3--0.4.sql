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

-- Functions created above are granted to no one, as at install
-- (src/sql/90_privileges.sql); keep this section last.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA hagen FROM PUBLIC;
