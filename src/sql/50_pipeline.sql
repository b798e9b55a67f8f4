-- hagenkit install script, part 50: the pipeline of a project (start,
-- cancel, retry, status) and the generic steps of its jobs.

-- Where a project's files go in the work directory (relative to hagen.work_dir).
CREATE FUNCTION hagen._work_file(project uuid, filename text) RETURNS text
	LANGUAGE sql IMMUTABLE RETURN project::text || '/' || filename;

-- The S3 (path-style) URL of the bucket.
CREATE FUNCTION hagen._s3_bucket_url() RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	endpoint text := rtrim(hagen._setting('hagen.s3_endpoint'), '/');
	bucket text := hagen._setting('hagen.s3_bucket');
BEGIN
	IF endpoint IS NULL OR bucket IS NULL THEN
		RAISE EXCEPTION 'storage is not configured'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('hagen.s3_endpoint is %s and hagen.s3_bucket is %s.',
								  coalesce(endpoint, 'unset'), coalesce(bucket, 'unset')),
				  HINT = 'Set hagen.s3_endpoint (or R2_ACCOUNT_ID) and hagen.s3_bucket (or R2_BUCKET_NAME).';
	END IF;
	RETURN endpoint || '/' || hagen._uri_encode(bucket, false);
END;
$$;

-- The S3 (path-style) URL of a storage key.
CREATE FUNCTION hagen._s3_url(key text) RETURNS text
	LANGUAGE sql STABLE
	RETURN hagen._s3_bucket_url() || '/' || hagen._uri_encode(key, true);

-- The URL recorded for a stored object: its public URL when a public base is
-- configured, else its S3 URL.
CREATE FUNCTION hagen._stored_url(key text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN hagen._setting('hagen.public_url') IS NOT NULL
				THEN hagen.public_url(key) ELSE hagen._s3_url(key) END;

-- Sets a project's progress.  The percent only moves forward while a run lasts.
CREATE FUNCTION hagen._set_progress(project uuid, step text, label text, percent numeric)
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

-- The project as apps see it.
CREATE FUNCTION hagen.video_status(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
BEGIN
	RETURN jsonb_build_object(
		'project_id', p.id,
		'workspace_id', p.workspace_id,
		'status', p.status,
		'progress', p.progress,
		'provider', p.provider,
		'aspect_ratio', p.aspect_ratio,
		'clip_count', p.clip_count,
		'completed_clips', p.completed_clips,
		'failed_clips', p.failed_clips,
		'clips', coalesce((
			SELECT jsonb_agg(jsonb_build_object(
				'id', c.id, 'sequence_order', c.sequence_order, 'status', c.status,
				'clip_url', c.clip_url, 'transition_type', c.transition_type,
				'transition_status', c.transition_status,
				'transition_clip_url', c.transition_clip_url, 'error', c.error_message)
				ORDER BY c.sequence_order)
			FROM hagen.video_clip c WHERE c.project_id = p.id), '[]'),
		'final_video_url', p.final_video_url,
		'thumbnail_url', p.thumbnail_url,
		'duration', p.duration,
		'estimated_cost_cents', p.estimated_cost_cents,
		'actual_cost_cents', p.actual_cost_cents,
		'error_message', p.error_message,
		'started_at', p.started_at,
		'completed_at', p.completed_at);
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
CREATE FUNCTION hagen._estimate_cents(p hagen.video_project) RETURNS integer
	LANGUAGE sql STABLE
	RETURN (SELECT coalesce(sum(c.cost_cents), 0) FROM hagen.video_clip c WHERE c.project_id = p.id)
		   + hagen._run_cost_cents(p);

-- Queues a generation job for every clip and seamless transition of a
-- project that is not completed and has no live job.  Returns how many.
CREATE FUNCTION hagen._enqueue_generation(p hagen.video_project) RETURNS integer
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
CREATE FUNCTION hagen._check_runnable(p hagen.video_project) RETURNS void
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
CREATE FUNCTION hagen._begin_run(p hagen.video_project) RETURNS jsonb
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

-- Starts generating a project's video.  Calling it again while it runs
-- changes nothing; it never duplicates work and skips completed clips.
CREATE FUNCTION hagen.start_video(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	CASE p.status
	WHEN 'generating', 'compiling' THEN
		RETURN hagen.video_status(p.id) || '{"enqueued_jobs": 0, "note": "already running"}';
	WHEN 'completed' THEN
		RAISE EXCEPTION 'video project % is already completed', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Its video is at final_video_url; use hagen.retry_video() to re-run failed clips.';
	WHEN 'canceled' THEN
		RAISE EXCEPTION 'video project % was canceled', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Use hagen.retry_video() to resume it; completed clips are kept.';
	ELSE
		RETURN hagen._begin_run(p);
	END CASE;
END;
$$;

-- Re-runs the failed and canceled clips and transitions of a project, then
-- compiles again.  Completed clips are never generated again.
CREATE FUNCTION hagen.retry_video(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	IF p.status IN ('generating', 'compiling') THEN
		RETURN hagen.video_status(p.id) || '{"enqueued_jobs": 0, "note": "already running"}';
	ELSIF p.status = 'pending' THEN
		RAISE EXCEPTION 'video project % has not been started', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Use hagen.start_video() to start it.';
	ELSIF p.status = 'completed'
		  AND NOT EXISTS (SELECT 1 FROM hagen.video_clip c WHERE c.project_id = p.id
						  AND (c.status <> 'completed'
							   OR c.transition_status IN ('failed', 'canceled'))) THEN
		RETURN hagen.video_status(p.id) || '{"enqueued_jobs": 0, "note": "nothing to retry"}';
	END IF;
	UPDATE hagen.video_clip c SET status = 'pending', error_message = NULL
	WHERE c.project_id = p.id AND c.status IN ('failed', 'canceled');
	UPDATE hagen.video_clip c SET transition_status = NULL
	WHERE c.project_id = p.id AND c.transition_status IN ('failed', 'canceled');
	RETURN hagen._begin_run(p);
END;
$$;

-- Stops a project's work: queued jobs are canceled at once, running ones as
-- soon as their current effect returns, and provider requests already made
-- get a cancel request.  Completed clips are kept.
CREATE FUNCTION hagen.cancel_video(project_id uuid) RETURNS jsonb
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

-- Records the end of one job (_jobs_finished).
CREATE FUNCTION hagen._job_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	PERFORM hagen._jobs_finished(ARRAY[j]);
END;
$$;

-- How far a generation job has come, from 0 to 1, by its step (and the
-- provider's own progress where it gives one).
CREATE FUNCTION hagen._job_fraction(j hagen.job) RETURNS numeric
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

-- Counts a run from scratch when it starts: its clips (count, completed,
-- failed or canceled, cost) and its generation jobs (how many, how many
-- ended, the sum of their fractions).  From then on the counters move with
-- every change, in O(1) (_project_moved): nothing on the workers' path
-- reads all of a project's jobs or clips.
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

-- Moves a generating project on after counting it from scratch: at the
-- start of a run, or for a project whose jobs or clips were changed by
-- hand.  (The workers' path moves projects on by difference,
-- _project_moved.)
CREATE FUNCTION hagen._advance_project(project uuid) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	PERFORM 1 FROM hagen.video_project v WHERE v.id = project AND v.status = 'generating' FOR UPDATE;
	IF FOUND THEN
		PERFORM hagen._count_run(project);
		PERFORM hagen._project_moved(project);
	END IF;
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

-- Moves one project on (_projects_moved).
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

-- Counts the changes of clip and transition jobs an UPDATE made in their
-- projects: how far each came (its fraction), whether it ended.  The
-- progress moves on when a job changes step, when the provider reports a
-- new status or progress, and when a part of its multipart upload is stored
-- (but the last); a job that ended moves its project on from _job_finished,
-- once its clip is recorded.  A trigger, so that no path that changes a job
-- can leave the counters behind; a statement trigger, so that a batch of
-- outcomes (complete_jobs) moves each of its projects with one UPDATE of
-- their rows, locked in the order of their ids.  The change of a job counts
-- only if the job belongs to the project's current run (queued after it
-- started).  Where a move leaves no generation job of the run live, the run
-- ends (_projects_moved, _run_ended).
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
