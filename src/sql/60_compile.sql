-- hagenkit install script, part 60: the compile job.
--
-- A compile is a job like a clip's, with steps:
--   fetch     every input of the video that is not in the work directory
--             yet (a clip stored by an earlier run, the music) is fetched
--             by a job of its own (kind "fetch", the compile job as
--             parent), an ordinary http effect retried on its own; the
--             compile job waits until they are all there.  A refusal of
--             the network guard or a 4xx fails the project at once.
--   compile   the one effect of the compile lane: hagen-compile runs on the
--             manifest below, exactly as emitted here, in a directory of
--             its own attempt, and reports a fraction as it goes.
--   (or, when the video must be re-encoded, split across compile workers
--   (63_chunks.sql):
--   plan      hagen-compile probes the segments and gives the target and
--             every fade in frames; SQL splits the timeline into chunks
--   chunks    the chunk jobs (kind "chunk") encode at once, each stored
--   gather    their files are fetched like the inputs (none on this host)
--   join      hagen-compile joins them and mixes the audio once)
--   store     thumbnail.jpg, then final.mp4, through the storing steps of
--             clips (57_upload.sql: one PUT, or a multipart upload from
--             hagen.s3_multipart_threshold on, resumed after a restart).
--             A failed upload retries the upload, never FFmpeg.
-- When the project has ended (and after any ending), its work files are
-- removed by a cleanup job (65_workdir.sql).

-- The time limit of hagen-compile on one compile.
CREATE FUNCTION hagen._compile_timeout() RETURNS interval
	LANGUAGE sql STABLE RETURN hagen._setting_interval('hagen.compile_timeout', '30 minutes');

-- Threads of one run of hagen-compile (0: one per core), put into the
-- manifest of a compile when it is queued (and of its chunks).
CREATE FUNCTION hagen._compile_threads() RETURNS integer
	LANGUAGE sql STABLE RETURN hagen._setting('hagen.compile_threads', '0')::integer;

-- The shortest chunk of a split re-encode, in seconds of video (0: a
-- re-encode is never split).
CREATE FUNCTION hagen._chunk_length() RETURNS numeric
	LANGUAGE sql STABLE
	RETURN extract(epoch FROM hagen._setting_interval('hagen.compile_chunk_length', '10 seconds'));

-- The segments of the final video in order: completed clips by
-- sequence_order, each followed by its seamless transition when that
-- completed and leads into the very next clip; anything else is a cut, and
-- a clip after a cut fades in from the segment before it when the project
-- has a crossfade.  Each segment names its work file, its storage key and
-- how it is called in messages.
CREATE FUNCTION hagen._compile_segments(p hagen.video_project) RETURNS jsonb
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
-- inputs to fetch with the storage key of each, and the storage keys of the
-- results.  The music is fetched from its URL and stored in the bucket
-- beside the clips, so that every input of a compile is in the bucket (a
-- compile worker on another host reads them there).
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
-- the bucket; the music from its URL, through the network guard, and is
-- then stored in the bucket at its key (the storing steps of clips).
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

-- The effect of the current step of a compile job.
CREATE FUNCTION hagen._compile_effect(j hagen.job) RETURNS jsonb
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
-- 97 % by the fraction hagen-compile reports, storing 97 to 99 %.  A split
-- re-encode: its chunks 85 to 95 % (63_chunks.sql), the join 95 to 97 %.
-- A chunk's fraction is kept in its job.  Progress is only shown: when
-- another transaction holds the project (a cancel, say) it is not waited for.
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

-- Reads the outcome of the current step of a compile job.
CREATE FUNCTION hagen._compile_interpret(j hagen.job, o jsonb) RETURNS jsonb
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
CREATE FUNCTION hagen._compile_finished(j hagen.job) RETURNS void
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
