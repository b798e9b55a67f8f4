-- hagenkit install script, part 63: a re-encode split into chunks.
--
-- A compile that must re-encode (a crossfade) is planned first: hagen-compile
-- probes the segments and reports the target size and frame rate and every
-- fade in frames (the compile's step "plan", 60_compile.sql).  From that plan
-- SQL cuts the timeline at segment boundaries into chunks of at least
-- hagen.compile_chunk_length seconds of clips, and queues one job per chunk
-- (kind "chunk", the compile job as parent):
--   encode   the compile lane: hagen-compile encodes the chunk's segments,
--            video only, with the plan's target and fades; where a fade
--            crosses into the next chunk it also decodes the first frames of
--            the next segment (the "head") and blends them in, as a single
--            compile would; its result counts each segment's frames
--   store    the chunk's file goes into the bucket at
--            {workspace}/videos/{project}/chunks/{compile job}/{n}.mp4
--            (the storing steps of clips), for a join on another host
-- Any compile worker, in the server or on another host, takes any chunk:
-- they encode at once.  Each chunk is retried on its own (twice, like a
-- compile); one that fails for good fails the project, naming it.  The
-- compile job waits ("chunks"), then fetches the chunks it does not have
-- ("gather": fetch jobs, unless_exists), then joins them ("join"): their
-- videos stream-copied at whole-frame offsets, the audio of every segment
-- placed against the chunks' frame counts, mixed with the music and encoded
-- once, so the file has the frames, timestamps and audio a single compile
-- makes.  When the compile ends, however it ends, chunks still at work stop
-- and the chunk objects are deleted (a purge of their prefix).

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
