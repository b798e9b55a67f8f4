-- hagenkit install script, part 60: the compile job.

-- The segments of the final video in order: completed clips by
-- sequence_order, each followed by its seamless transition when that
-- completed and leads into the very next clip; anything else is a cut, and
-- a clip after a cut fades in from the segment before it when the project
-- has a crossfade.
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
	SELECT coalesce(jsonb_agg(seg || jsonb_build_object('url', hagen._s3_url(seg ->> 'key'))
							  ORDER BY sequence_order, part), '[]')
	FROM segs;
$$;

-- The compile effect: everything the compile worker needs to gather the
-- inputs, run hagen-compile and store the results.
CREATE FUNCTION hagen._compile_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(j.project_id);
	m hagen.music_track;
	final_key text := hagen.get_video_path(p.workspace_id, p.id, 'final.mp4');
	thumb_key text := hagen.get_video_path(p.workspace_id, p.id, 'thumbnail.jpg');
BEGIN
	SELECT * INTO m FROM hagen.music_track WHERE id = p.music_track_id;
	RETURN jsonb_build_object(
		'type', 'compile',
		'timeout_ms', (extract(epoch FROM hagen._setting_interval('hagen.compile_timeout',
																   '30 minutes')) * 1000)::bigint,
		'work_dir', p.id::text,
		'segments', hagen._compile_segments(p),
		'music', CASE WHEN m.id IS NULL THEN NULL ELSE jsonb_build_object(
					'url', m.audio_url, 'volume', p.music_volume,
					'file', hagen._work_file(p.id, 'music')) END,
		'video_volume', p.video_volume,
		'aspect_ratio', p.aspect_ratio,
		'output', jsonb_build_object('key', final_key, 'url', hagen._s3_url(final_key),
									 'file', hagen._work_file(p.id, 'final.mp4'),
									 'content_type', 'video/mp4'),
		'thumbnail', jsonb_build_object('key', thumb_key, 'url', hagen._s3_url(thumb_key),
										'file', hagen._work_file(p.id, 'thumbnail.jpg'),
										'content_type', 'image/jpeg'));
END;
$$;

-- Reads the compile worker's report.  A crash or a failure is retried once,
-- then fails the project with the helper's message (which names the
-- segment it concerns; the number is added when it does not).
CREATE FUNCTION hagen._compile_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	r jsonb := o -> 'result';
	msg text := coalesce(o ->> 'error', 'the compile worker gave no result');
BEGIN
	IF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object'
	   AND (r ->> 'duration') ~ '^[0-9.]+$' THEN
		RETURN jsonb_build_object('action', 'succeed', 'state', jsonb_build_object(
			'result', r, 'final_key', o ->> 'final_key', 'thumbnail_key', o ->> 'thumbnail_key'));
	END IF;
	IF o ->> 'segment' IS NOT NULL AND msg !~ ('\msegment ' || (o ->> 'segment') || '\M') THEN
		msg := msg || ' (segment ' || (o ->> 'segment') || ')';
	END IF;
	RETURN jsonb_build_object('action', 'retry', 'max_attempts', 2, 'error', 'compile failed: ' || msg);
END;
$$;

-- Records the end of the compile on the project.
CREATE FUNCTION hagen._compile_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
	omitted text;
BEGIN
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
			thumbnail_url = CASE WHEN j.state ->> 'thumbnail_key' IS NOT NULL
								 THEN hagen._stored_url(j.state ->> 'thumbnail_key') END,
			duration = (j.state -> 'result' ->> 'duration')::real,
			actual_cost_cents = (SELECT coalesce(sum(cost_cents), 0) FROM hagen.video_clip c
								 WHERE c.project_id = p.id),
			error_message = omitted,
			progress = '{"step": "completed", "label": "Completed", "percent": 100}'
		WHERE v.id = p.id;
		PERFORM hagen._log(j.id, p.id, 'info', 'video completed',
						   jsonb_build_object('duration', j.state -> 'result' -> 'duration'));
	ELSIF j.status = 'failed' THEN
		UPDATE hagen.video_project v
		SET status = 'failed', completed_at = now(), error_message = j.last_error,
			progress = jsonb_build_object('step', 'failed', 'label', 'Failed',
				'percent', coalesce((v.progress ->> 'percent')::numeric, 0))
		WHERE v.id = p.id;
	END IF;
END;
$$;
