-- The job engine driven by hand: a fake provider answers every effect
-- with canned outcomes, with no network, through whole pipelines.
\pset null '(null)'

-- More test helpers (schema t comes from the api test).
-- Outcomes to give instead of the happy ones: (kind, clip seq, step) -> outcome, n times.
CREATE TABLE t.script (id serial, kind text, clip_seq integer, step text, outcome jsonb, times integer DEFAULT 1);


-- What a fake hagen-compile plans: 5 s segments of 120 frames at 24 fps,
-- each fade 24 frames a second; normalize when a segment fades in.
CREATE FUNCTION t.fake_plan(m jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('status', 'ok', 'result', jsonb_build_object('task', 'plan',
		'mode', CASE WHEN m @? '$.segments[*] ? (@.crossfade > 0)' THEN 'normalize' ELSE 'copy_video' END,
		'width', 1920, 'height', 1080, 'fps', '24/1',
		'duration', 5 * count(*) - sum(coalesce((s ->> 'crossfade')::numeric, 0)),
		'segments', jsonb_agg(jsonb_build_object('index', k, 'label', s ->> 'label', 'duration', 5,
			'frames', 120, 'fade_frames', round(coalesce((s ->> 'crossfade')::numeric, 0) * 24)) ORDER BY k)))
	FROM jsonb_array_elements(m -> 'segments') WITH ORDINALITY AS x(s, k);
$$;
-- What a fake hagen-compile encodes as a chunk: every segment 120 frames,
-- the last frames held for the next fade, the first left out after a split.
CREATE FUNCTION t.fake_chunk(m jsonb) RETURNS jsonb LANGUAGE sql AS $$
	WITH s AS (
		SELECT x.k, (x.s ->> 'index')::integer AS idx, (x.s ->> 'fade_frames')::integer AS fade,
			   coalesce((x.s ->> 'head')::boolean, false) AS head,
			   coalesce(lead((x.s ->> 'fade_frames')::integer) OVER (ORDER BY x.k), 0) AS held
		FROM jsonb_array_elements(m -> 'segments') WITH ORDINALITY AS x(s, k))
	SELECT jsonb_build_object('status', 'ok', 'result', jsonb_build_object('task', 'chunk',
		'first', min(idx), 'last', max(idx) FILTER (WHERE NOT head), 'size', 3000000,
		'frames', sum(CASE WHEN head THEN fade WHEN k = 1 THEN 120 - held - fade ELSE 120 - held END),
		'segments', jsonb_agg(jsonb_build_object('index', idx, 'frames', 120, 'held', held) ORDER BY k)
			FILTER (WHERE NOT head)))
	FROM s;
$$;

-- The happy answer of a fake Fal.ai / storage / compile to an effect.
CREATE FUNCTION t.happy(j hagen.job, eff jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	seq integer := (SELECT sequence_order FROM hagen.video_clip WHERE id = j.clip_id);
	req text := j.kind || '-' || seq;
BEGIN
	IF eff ->> 'type' = 'compile' AND eff -> 'manifest' ->> 'task' = 'plan' THEN
		RETURN t.fake_plan(eff -> 'manifest');
	ELSIF eff ->> 'type' = 'compile' AND eff -> 'manifest' ->> 'task' = 'chunk' THEN
		RETURN t.fake_chunk(eff -> 'manifest');
	ELSIF eff ->> 'type' = 'compile' THEN
		RETURN jsonb_build_object('status', 'ok',
			'result', jsonb_build_object('duration', round(5.0 * jsonb_array_length(eff -> 'manifest' -> 'segments')
											- coalesce((SELECT sum((s ->> 'fade_frames')::numeric) / 24
														FROM jsonb_array_elements(eff -> 'manifest' -> 'segments') s), 0), 1),
										 'mode', CASE WHEN eff -> 'manifest' ? 'task' THEN 'normalize' ELSE 'copy_video' END,
										 'size', 4000000, 'thumbnail_size', 20000));
	ELSIF eff ->> 'type' = 'noop' THEN
		RETURN '{"type": "noop"}';
	ELSIF eff ->> 'type' = 'remove' THEN
		RETURN '{"status": "ok", "removed": true}';
	ELSIF j.kind = 'purge' AND j.step = 'list' THEN
		-- The bucket holds the chunks stored under the prefix.
		RETURN jsonb_build_object('status', 200, 'body_text',
			'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated>'
			|| coalesce((SELECT string_agg('<Contents><Key>' || (c.state ->> 'key') || '</Key></Contents>', '' ORDER BY c.id)
						 FROM hagen.job c WHERE c.kind = 'chunk' AND c.status = 'succeeded'
						   AND starts_with(c.state ->> 'key', j.state ->> 'prefix')), '')
			|| '</ListBucketResult>');
	ELSIF j.kind = 'purge' AND j.step = 'delete' THEN
		RETURN '{"status": 200, "body_text": "<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></DeleteResult>"}';
	ELSIF j.kind = 'fetch' THEN
		RETURN jsonb_build_object('status', 200, 'file', eff ->> 'save_to', 'bytes', 123456, 'existing', true);
	ELSIF j.kind = 'cancel' THEN
		RETURN '{"status": 202, "body_text": "{\"status\": \"CANCELLATION_REQUESTED\"}"}';
	END IF;
	CASE j.step
	WHEN 'image_fetch' THEN
		RETURN jsonb_build_object('status', 200, 'headers', '{"content-type": "image/jpeg"}'::jsonb,
								  'file', eff ->> 'save_to', 'bytes', 48000);
	WHEN 'image_frame' THEN
		RETURN jsonb_build_object('status', 'ok', 'result', jsonb_build_object('width', 1080, 'height', 1920,
			'bytes', 250000, 'source', '{"width": 1600, "height": 900, "orientation": 1}'::jsonb));
	WHEN 'image_store' THEN
		RETURN '{"status": 200}';
	WHEN 'image_initiate' THEN
		RETURN jsonb_build_object('status', 200, 'body_text', jsonb_build_object(
			'upload_url', format('http://fal.test/cdn/upload/%s-%s', req, j.state ->> 'image_index'),
			'file_url', format('https://v3.fal.media/files/%s/%s', req, eff -> 'body' ->> 'file_name'))::text);
	WHEN 'image_put' THEN
		RETURN '{"status": 200}';
	WHEN 'submit' THEN
		IF j.provider = 'xai' THEN
			RETURN jsonb_build_object('status', 200, 'body_text', jsonb_build_object('request_id', req)::text);
		END IF;
		RETURN jsonb_build_object('status', 200, 'headers', jsonb_build_object('x-fal-request-id', req),
			'body_text', jsonb_build_object('status', 'IN_QUEUE', 'request_id', req,
				'status_url', 'http://fal.test/queue/fal-ai/kling-video/requests/' || req || '/status',
				'response_url', 'http://fal.test/queue/fal-ai/kling-video/requests/' || req,
				'cancel_url', 'http://fal.test/queue/fal-ai/kling-video/requests/' || req || '/cancel',
				'queue_position', 0)::text);
	WHEN 'poll' THEN
		IF j.provider = 'xai' THEN
			IF j.state ->> 'provider_status' IS NULL THEN
				RETURN '{"status": 202, "body_text": "{\"status\": \"pending\", \"progress\": 40}"}';
			END IF;
			RETURN jsonb_build_object('status', 200, 'body_text', jsonb_build_object('status', 'done',
				'video', jsonb_build_object('url', 'https://vidgen.x.ai/' || req || '.mp4', 'duration', 5),
				'progress', 100)::text);
		ELSIF j.state ->> 'provider_status' IS NULL THEN
			RETURN jsonb_build_object('status', 202, 'body_text',
				jsonb_build_object('status', 'IN_QUEUE', 'queue_position', 3)::text);
		ELSIF j.state ->> 'provider_status' = 'IN_QUEUE' THEN
			RETURN jsonb_build_object('status', 202, 'body_text', '{"status": "IN_PROGRESS", "logs": null}');
		END IF;
		RETURN jsonb_build_object('status', 200, 'body_text',
			'{"status": "COMPLETED", "logs": null, "metrics": {"inference_time": 3.4}}');
	WHEN 'result' THEN
		RETURN jsonb_build_object('status', 200, 'body_text', jsonb_build_object('video',
			jsonb_build_object('url', 'https://v3.fal.media/files/' || req || '/output.mp4',
							   'content_type', 'video/mp4'))::text);
	WHEN 'download' THEN
		RETURN jsonb_build_object('status', 200, 'file', eff ->> 'save_to', 'bytes', 123456);
	WHEN 'store' THEN
		RETURN '{"status": 200, "headers": {"etag": "\"abc\""}}';
	END CASE;
	RAISE EXCEPTION 'no happy answer for % step %', j.kind, j.step;
END;
$$;

-- Makes every queued job due now (skips back-off waits).
CREATE FUNCTION t.due() RETURNS void LANGUAGE sql AS $$
	UPDATE hagen.job SET run_at = now() - interval '1 second' WHERE status = 'queued';
$$;

-- One round of a worker: claim every due job of a lane and answer each.
CREATE FUNCTION t.tick(lane text DEFAULT 'http', make_due boolean DEFAULT true)
	RETURNS TABLE (kind text, seq integer, step text, verdict text, next_step text, status text)
	LANGUAGE plpgsql AS $$
DECLARE
	c record;
	j hagen.job;
	o jsonb;
	s t.script;
BEGIN
	IF make_due THEN
		PERFORM t.due();
	END IF;
	FOR c IN SELECT * FROM hagen.claim_jobs(tick.lane, 100) ORDER BY 1 LOOP
		SELECT * INTO j FROM hagen.job WHERE id = c.job_id;
		seq := (SELECT sequence_order FROM hagen.video_clip WHERE id = j.clip_id);
		SELECT * INTO s FROM t.script x
		WHERE x.kind = j.kind AND x.clip_seq IS NOT DISTINCT FROM seq AND x.step = j.step AND x.times > 0
		ORDER BY x.id LIMIT 1;
		IF FOUND THEN
			UPDATE t.script x SET times = x.times - 1 WHERE x.id = s.id;
			o := s.outcome;
		ELSE
			o := t.happy(j, c.effect);
		END IF;
		kind := j.kind;
		step := j.step;
		verdict := hagen.complete_job(c.job_id, c.token, o);
		SELECT q.step, q.status INTO next_step, status FROM hagen.job q WHERE q.id = c.job_id;
		RETURN NEXT;
	END LOOP;
END;
$$;


-- Runs the workers until nothing is left to do: every lane, round after
-- round.  Returns how many effects were answered.
CREATE FUNCTION t.run(max_rounds integer DEFAULT 50) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
	total integer := 0;
	n integer;
	i integer;
BEGIN
	FOR i IN 1 .. max_rounds LOOP
		SELECT count(*) INTO n FROM t.tick('http');
		total := total + n;
		-- The compile lane too: a compile waiting for its chunks keeps
		-- the http lane busy with its looks.
		IF n = 0 OR EXISTS (SELECT 1 FROM hagen.job WHERE lane = 'compile' AND status = 'queued') THEN
			SELECT count(*) + n INTO n FROM t.tick('compile');
			total := total + n;
			EXIT WHEN n = 0;
		END IF;
	END LOOP;
	RETURN total;
END;
$$;

-- Answers rounds until no job is uploading its images any more (the
-- scenarios below are about what follows).
CREATE FUNCTION t.upload_images() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
	rounds integer := 0;
BEGIN
	WHILE EXISTS (SELECT 1 FROM hagen.job WHERE status = 'queued' AND step LIKE 'image\_%') LOOP
		PERFORM t.due();
		-- Hold back the jobs that are done with their images.
		UPDATE hagen.job SET run_at = now() + interval '1 hour'
		WHERE status = 'queued' AND step NOT LIKE 'image\_%';
		PERFORM t.tick('http', false);
		rounds := rounds + 1;
		EXIT WHEN rounds > 20;
	END LOOP;
	PERFORM t.due();
	RETURN rounds;
END;
$$;

-- A project of three clips (the second with a seamless transition) and music.
CREATE FUNCTION t.project(ws text, provider text DEFAULT 'fal') RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	m uuid := hagen.add_music_track('Bright', 'https://music.example.com/bright.mp3', 'upbeat', 'uplifting');
	p uuid := hagen.create_project(ws, '16:9', provider, false, m, 0.3, 1.0, framing => 'none');
BEGIN
	PERFORM hagen.add_clip(p, 'https://img.example.com/1.jpg', room_type => 'exterior');
	PERFORM hagen.add_clip(p, 'https://img.example.com/2.jpg', 'https://img.example.com/2-end.jpg',
						   'living_room', 'Living room', transition_type => 'seamless');
	PERFORM hagen.add_clip(p, 'https://img.example.com/3.jpg', room_type => 'Primary Bedroom', duration => 10);
	RETURN p;
END;
$$;

-- 1. A whole pipeline, happy path.
SELECT t.project('ws-happy') AS p \gset
SELECT status, enqueued_jobs, estimated_cost_cents, progress
FROM jsonb_to_record(hagen.start_video(:'p'))
	AS r(status text, enqueued_jobs int, estimated_cost_cents int, progress jsonb);
-- The jobs: clips and the transition start together (one provider round).
SELECT j.kind, c.sequence_order AS seq, j.step, j.status, j.state ->> 'prompt' AS prompt,
       j.state ->> 'start_image' AS start_image, j.state ->> 'end_image' AS end_image,
       t.mask(j.state ->> 'key') AS key
FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id
WHERE j.project_id = :'p' ORDER BY j.id;
-- The first effects: fetching the images to upload them to Fal storage.
SELECT c.effect ->> 'method' AS method, c.effect ->> 'url' AS url, c.effect ->> 'auth' AS auth,
       c.effect ->> 'guard' AS guard, t.mask(c.effect ->> 'save_to') AS save_to, c.effect -> 'max_bytes' AS max_bytes
FROM hagen.claim_jobs('http', 1) c;
-- That job is leased now: nobody else gets it.
SELECT count(*) AS claimable FROM hagen.job WHERE status = 'queued';
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
-- Round by round: images to Fal storage, submit, poll, result, download, store.
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
-- What was submitted: the images as uploaded to Fal storage.
SELECT c.sequence_order AS seq, j.kind, j.state ->> 'start_image' AS start_image, j.state ->> 'end_image' AS end_image
FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id WHERE j.project_id = :'p' ORDER BY j.id;
SELECT status, completed_clips, progress FROM hagen.video_project WHERE id = :'p';
-- The compile fetches its inputs first: each segment from the bucket unless
-- it is in the work directory already, the music through the guard.
SELECT j.step, j.lane, j.state ->> 'fetches' AS fetches FROM hagen.job j
WHERE j.project_id = :'p' AND j.kind = 'compile';
SELECT c.effect ->> 'method' AS method, t.mask(c.effect ->> 'url') AS url, c.effect ->> 'auth' AS auth,
       c.effect -> 'guard' AS guard, c.effect -> 'unless_exists' AS unless_exists,
       t.mask(c.effect ->> 'save_to') AS save_to, c.effect ->> 'timeout_ms' AS timeout_ms
FROM hagen.claim_jobs('http', 100) c JOIN hagen.job j ON j.id = c.job_id
WHERE j.kind = 'fetch' ORDER BY c.job_id;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT * FROM t.tick();
SELECT progress FROM hagen.video_project WHERE id = :'p';
-- The music is stored in the bucket beside the clips; then the compile goes on.
SELECT * FROM t.tick();
SELECT * FROM t.tick();
-- The compile effect: the manifest lists clip 0, clip 1, its transition,
-- clip 2, with the music, all relative to the work directory; the outputs
-- go to a directory of this attempt.
SELECT c.effect -> 'manifest' -> 'segments' @? '$[3]' AS four_segments,
       jsonb_path_query_array(c.effect -> 'manifest' -> 'segments', '$[*].kind') AS kinds,
       t.mask(c.effect -> 'manifest' -> 'music' ->> 'file') AS music, c.effect -> 'manifest' -> 'music' -> 'volume' AS volume,
       regexp_replace(t.mask(c.effect -> 'manifest' ->> 'output'), 'compile_\d+_', 'compile_<job>_') AS output,
       regexp_replace(t.mask(c.effect ->> 'dir'), 'compile_\d+_', 'compile_<job>_') AS dir,
       jsonb_path_query_array(c.effect, '$.inputs[*].key') @? '$[4] ? (@ like_regex "music_")' AS music_in_bucket,
       jsonb_path_query_array(c.effect, '$.outputs[*].content_type') AS outputs
FROM hagen.claim_jobs('compile', 1) c;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT * FROM t.tick('compile');
-- Then the thumbnail and the video are stored, on the http lane.
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT status, duration, completed_clips, failed_clips, estimated_cost_cents, actual_cost_cents,
       final_video_url LIKE 'https://cdn.example.com/ws-happy/videos/%/final.mp4' AS final_url,
       thumbnail_url LIKE '%/thumbnail.jpg' AS thumb, error_message, progress
FROM hagen.video_project WHERE id = :'p';
SELECT c.sequence_order, c.status, c.clip_url LIKE 'https://cdn.example.com/ws-happy/videos/%.mp4' AS url_ok,
       c.transition_status, c.transition_clip_url LIKE '%/transition_%.mp4' AS transition_ok, c.cost_cents
FROM hagen.video_clip c WHERE project_id = :'p' ORDER BY 1;
-- The project's work files are removed once it completed.
SELECT j.kind, j.step, j.status, j.state ->> 'reason' AS reason, e.effect ->> 'type' AS effect,
       e.effect ->> 'path' = :'p' AS its_directory
FROM hagen.job j, LATERAL (SELECT hagen._effect(j) AS effect) e
WHERE j.kind = 'cleanup' AND j.state ->> 'dir' = :'p';
SELECT * FROM t.tick();
-- Each clip was submitted exactly once, and the log tells the story.
SELECT kind, count(*) FILTER (WHERE message LIKE 'submitted%') AS submits
FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id WHERE j.project_id = :'p'
GROUP BY kind ORDER BY kind;
SELECT level, message FROM hagen.job_log
WHERE job_id = (SELECT min(id) FROM hagen.job WHERE project_id = :'p') ORDER BY id;
-- Starting a completed project is refused.
SELECT t.err(format('SELECT hagen.start_video(%L)', :'p'));

-- 2. Faults: 429 with Retry-After and a 503 are retried; a lost submit
-- answer is never sent again; a 422 at result time fails that clip only.
SELECT t.project('ws-faults') AS p \gset
INSERT INTO t.script (kind, clip_seq, step, outcome, times) VALUES
	('clip', 0, 'submit', '{"status": 429, "headers": {"retry-after": "30"}, "body_text": "{\"detail\": \"Rate limited\"}"}', 1),
	('clip', 0, 'poll', '{"status": 503, "body_text": "<html>busy</html>"}', 1),
	('clip', 1, 'submit', '{"status": 0, "error": "http://fal.test/queue: Operation timed out", "phase": "transfer"}', 1),
	('clip', 2, 'result', '{"status": 422, "body_text": "{\"detail\": [{\"loc\": [\"body\", \"prompt\"], \"msg\": \"Prompt violates the content policy\", \"type\": \"content_policy_violation\"}]}"}', 1),
	('transition', 1, 'poll', '{"status": 200, "body_text": "{not json"}', 1);
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() AS image_rounds;
SELECT * FROM t.tick();
-- The 429 waits at least its Retry-After.
SELECT step, attempts, last_error, run_at - now() >= interval '29 seconds' AS waits
FROM hagen.job WHERE project_id = :'p' AND kind = 'clip' AND status = 'queued' AND last_error IS NOT NULL;
SELECT t.run() > 0 AS ran;
SELECT c.sequence_order, c.status, c.error_message FROM hagen.video_clip c
WHERE c.project_id = :'p' ORDER BY 1;
SELECT kind, step, status, submit_unconfirmed, total_attempts FROM hagen.job
WHERE project_id = :'p' ORDER BY id;
-- Back-off is visible in the log.
SELECT level, regexp_replace(message, '\d+ ms', 'N ms') AS message
FROM hagen.job_log WHERE project_id = :'p' AND level = 'warning' ORDER BY id;
SELECT status, completed_clips, failed_clips, error_message FROM hagen.video_project WHERE id = :'p';

-- 3. A stale token is ignored: the job was recovered and claimed again.
SELECT t.project('ws-stale') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() AS image_rounds;
SELECT count(*) AS submitted FROM t.tick();
UPDATE hagen.job SET run_at = now() WHERE status = 'queued';
SELECT job_id AS stale_job, token AS stale_token FROM hagen.claim_jobs('http', 1) \gset
UPDATE hagen.job SET lease_expires_at = now() - interval '1 second' WHERE id = :stale_job;
SELECT count(*) AS reclaimed FROM hagen.claim_jobs('http', 100) WHERE job_id = :stale_job;
SELECT hagen.complete_job(:stale_job, :stale_token, '{"status": 200}');
SELECT level, message FROM hagen.job_log WHERE job_id = :stale_job ORDER BY id;
UPDATE hagen.job SET lease_expires_at = now() - interval '1 second' WHERE status = 'running';
SELECT t.run() > 0 AS ran;
SELECT status FROM hagen.video_project WHERE id = :'p';

-- A submit whose worker vanished mid-request is never sent again on its own.
SELECT t.project('ws-vanished') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() AS image_rounds;
SELECT count(*) AS claimed FROM hagen.claim_jobs('http', 100);
UPDATE hagen.job SET lease_expires_at = now() - interval '1 second' WHERE status = 'running';
SELECT count(*) AS effects FROM hagen.claim_jobs('http', 100);
SELECT kind, status, submit_unconfirmed, last_error FROM hagen.job WHERE project_id = :'p' ORDER BY id;
SELECT status FROM hagen.video_project WHERE id = :'p';

-- 4. Every clip fails: the project fails and says why.
SELECT t.project('ws-allfail') AS p \gset
INSERT INTO t.script (kind, clip_seq, step, outcome, times) SELECT 'clip', s, 'submit',
	'{"status": 403, "body_text": "{\"detail\": \"User is locked. Reason: Exhausted balance.\"}"}', 1
FROM generate_series(0, 2) s;
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.run() > 0 AS ran;
SELECT status, failed_clips, error_message FROM hagen.video_project WHERE id = :'p';

-- 5. A job past its time limit is failed without another effect.
SELECT t.project('ws-timeout') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
UPDATE hagen.job SET deadline_at = now() - interval '1 second' WHERE project_id = :'p';
SELECT count(*) AS effects FROM hagen.claim_jobs('http', 100);
SELECT DISTINCT status, last_error FROM hagen.job WHERE project_id = :'p';
SELECT status, error_message FROM hagen.video_project WHERE id = :'p';
-- A request still at the provider when its job's time runs out is canceled there.
SELECT t.project('ws-timeout-poll') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() AS image_rounds;
SELECT count(*) AS submitted FROM t.tick();
UPDATE hagen.job SET deadline_at = now() - interval '1 second', run_at = now() WHERE project_id = :'p';
SELECT count(*) AS effects FROM hagen.claim_jobs('http', 100) e JOIN hagen.job j ON j.id = e.job_id WHERE j.kind <> 'cancel';
SELECT j.kind, j.status, j.state ->> 'request_id' AS request_id FROM hagen.job j
WHERE j.project_id = :'p' ORDER BY j.id;
UPDATE hagen.job SET status = 'queued', lease_token = NULL WHERE status = 'running';
SELECT t.run() >= 0 AS ran;
SELECT count(*) FILTER (WHERE kind = 'cancel' AND status = 'succeeded') AS provider_cancels
FROM hagen.job WHERE project_id = :'p';

-- 6. A crossfade project: the re-encode is planned, split into chunks that
-- the compile workers encode at once, and joined.
SELECT hagen.create_project('ws-chunks', crossfade => 0.5,
	music_track_id => hagen.add_music_track('Calm', 'https://audio.example.com/calm.mp3')) AS p \gset
SELECT hagen.add_clip(:'p', 'https://img.example.com/c' || i || '.jpg', room_label => 'Room ' || i,
					  transition_type => CASE WHEN i = 2 THEN 'seamless' ELSE 'cut' END) IS NOT NULL AS added
FROM generate_series(1, 5) i;
UPDATE hagen.video_clip SET status = 'completed',
	transition_status = CASE WHEN sequence_order = 1 THEN 'completed' END WHERE project_id = :'p';
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
-- Six segments: clip 1, clip 2, its transition, clip 3 (no fade after a
-- transition), clips 4 and 5 (fades of 0.5 s).  The inputs are fetched,
-- then the compile is planned: hagen-compile probes the segments only.
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT j.step, j.lane, jsonb_path_query_array(j.state, '$.manifest.segments[*].crossfade') AS crossfades
FROM hagen.job j WHERE j.project_id = :'p' AND j.kind = 'compile';
SELECT c.effect -> 'manifest' ->> 'task' AS task, jsonb_array_length(c.effect -> 'inputs') AS inputs,
       c.effect -> 'outputs' AS outputs, c.effect -> 'manifest' -> 'threads' AS threads,
       regexp_replace(t.mask(c.effect ->> 'dir'), 'compile_\d+_', 'compile_<job>_') AS dir
FROM hagen.claim_jobs('compile', 1) c;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT kind, step, verdict, next_step FROM t.tick('compile');
-- The plan: 1920x1080 at 24 fps, fades of 12 frames.  At least 10 s of
-- clips a chunk (hagen.compile_chunk_length): segments 1-2, 3-4, 5-6.  A
-- chunk whose next segment fades in also gets that segment's head.
SELECT l.message FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
WHERE j.project_id = :'p' AND j.kind = 'compile' AND l.message LIKE 're-encode%';
SELECT j.state -> 'number' AS n, j.state -> 'first' AS first, j.state -> 'last' AS last, j.lane, j.step,
       jsonb_path_query_array(j.state, '$.manifest.segments[*].index') AS segments,
       jsonb_path_query_array(j.state, '$.manifest.segments[*].fade_frames') AS fades,
       jsonb_path_query_array(j.state, '$.manifest.segments[*] ? (@.head == true).index') AS head,
       j.state -> 'manifest' -> 'target' AS target, jsonb_array_length(j.state -> 'inputs') AS inputs,
       regexp_replace(t.mask(j.state ->> 'key'), '/chunks/\d+/', '/chunks/<job>/') AS key,
       j.parent_id = (SELECT id FROM hagen.job WHERE project_id = :'p' AND kind = 'compile') AS child
FROM hagen.job j WHERE j.project_id = :'p' AND j.kind = 'chunk' ORDER BY j.id;
SELECT step, status FROM hagen.job WHERE project_id = :'p' AND kind = 'compile';
SELECT progress FROM hagen.video_project WHERE id = :'p';
-- Any compile worker takes any chunk: the effect is a compile effect like
-- the others, its output in a directory of this attempt, stored at its key.
SELECT job_id AS c1, token AS t1, regexp_replace(t.mask(effect ->> 'dir'), 'chunk_\d+_', 'chunk_<job>_') AS dir,
       regexp_replace(t.mask(effect -> 'manifest' ->> 'output'), 'chunk_\d+_', 'chunk_<job>_') AS output,
       effect -> 'outputs' -> 0 ->> 'key' = (SELECT state ->> 'key' FROM hagen.job WHERE id = job_id) AS output_key,
       effect -> 'outputs' -> 0 ->> 'file' = effect -> 'manifest' ->> 'output' AS output_file,
       jsonb_array_length(effect -> 'inputs') AS inputs, effect -> 'manifest' ->> 'task' AS task
FROM hagen.claim_jobs('compile', 1) \gset
SELECT :'dir' AS dir, :'output' AS output, :'output_key' AS output_key, :'output_file' AS output_file,
       :'inputs' AS inputs, :'task' AS task;
SELECT job_id AS c2, token AS t2 FROM hagen.claim_jobs('compile', 1) \gset
-- Their fractions, weighed by their seconds of clips, make the percent.
SELECT hagen.heartbeat(:c1, :t1, '{"fraction": 0.5}') AS keep, hagen.heartbeat(:c2, :t2, '{"fraction": 1}') AS keep;
SELECT progress FROM hagen.video_project WHERE id = :'p';
SELECT hagen.complete_job(:c1, :t1, t.fake_chunk((SELECT state -> 'manifest' FROM hagen.job WHERE id = :c1)));
SELECT hagen.complete_job(:c2, :t2, t.fake_chunk((SELECT state -> 'manifest' FROM hagen.job WHERE id = :c2)));
SELECT kind, step, verdict, next_step FROM t.tick('compile');
-- Each encoded chunk is stored in the bucket; the last one wakes the compile.
SELECT j.state -> 'number' AS n, j.step, j.state -> 'result' -> 'frames' AS frames,
       jsonb_path_query_array(j.state, '$.result.segments[*].held') AS held
FROM hagen.job j WHERE j.project_id = :'p' AND j.kind = 'chunk' ORDER BY j.id;
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT progress FROM hagen.video_project WHERE id = :'p';
-- The join's inputs: the chunks are fetched like the segments (here: found
-- in the work directory, where they were encoded).
SELECT j.kind, c.effect ->> 'method' AS method,
       regexp_replace(t.mask(c.effect ->> 'url'), '/chunks/\d+/', '/chunks/<job>/') AS url,
       c.effect -> 'unless_exists' AS unless_exists,
       regexp_replace(t.mask(c.effect ->> 'save_to'), 'chunk_\d+_\d+', 'chunk_<job>_<attempt>') AS save_to
FROM hagen.claim_jobs('http', 100) c JOIN hagen.job j ON j.id = c.job_id ORDER BY c.job_id;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
-- The join: the chunks in order, each segment with the frames its chunk
-- counted and those it held back; the segments and the music for the audio.
SELECT c.effect -> 'manifest' ->> 'task' AS task,
       jsonb_path_query_array(c.effect, '$.manifest.chunks[*].first') AS firsts,
       jsonb_path_query_array(c.effect, '$.manifest.segments[*].frames') AS frames,
       jsonb_path_query_array(c.effect, '$.manifest.segments[*].held') AS held,
       jsonb_path_query_array(c.effect, '$.manifest.segments[*].fade_frames') AS fades,
       c.effect -> 'manifest' -> 'target' AS target, c.effect -> 'manifest' -> 'music' IS NOT NULL AS music,
       jsonb_array_length(c.effect -> 'inputs') AS inputs,
       jsonb_path_query_array(c.effect, '$.outputs[*].content_type') AS outputs
FROM hagen.claim_jobs('compile', 1) c;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT kind, step, verdict, next_step FROM t.tick('compile');
SELECT progress FROM hagen.video_project WHERE id = :'p';
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT status, duration, final_video_url LIKE '%/final.mp4' AS final_url, error_message, progress
FROM hagen.video_project WHERE id = :'p';
-- The chunks in the bucket are deleted once the video is stored.
SELECT j.step, j.status, regexp_replace(t.mask(j.state ->> 'prefix'), '/chunks/\d+/', '/chunks/<job>/') AS prefix,
       j.state ->> 'project_id' = :'p' AS of_project
FROM hagen.job j WHERE j.kind = 'purge' AND j.state ->> 'prefix' LIKE '%/chunks/%' AND j.state ->> 'project_id' = :'p';
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT kind, step, verdict, next_step FROM t.tick() ORDER BY kind, step;
SELECT j.status, j.state -> 'deleted' AS deleted FROM hagen.job j
WHERE j.kind = 'purge' AND j.state ->> 'project_id' = :'p';
SELECT t.mask(l.message) AS message FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
WHERE j.project_id = :'p' AND j.kind = 'compile' ORDER BY l.id;
SELECT count(*) AS left_live FROM hagen.job WHERE status IN ('queued', 'running');
