-- Project life cycle: idempotent start, cancel (with provider cancels),
-- retry of only what failed, the xAI adapter, recovery and scheduling.
\pset null '(null)'
SELECT count(*) AS leftover FROM hagen.job WHERE status IN ('queued', 'running');

-- 1. Starting twice queues the work once.
SELECT t.project('ws-idem') AS p \gset
SELECT (hagen.start_video(:'p')) -> 'enqueued_jobs' AS first;
SELECT (hagen.start_video(:'p')) ->> 'note' AS second;
SELECT kind, count(*) FROM hagen.job WHERE project_id = :'p' GROUP BY kind ORDER BY kind;

-- 2. Cancel while running: queued jobs stop at once, a job whose request
-- is at the provider gets a cancel request, a running effect's answer is
-- kept (its request id) and then canceled too.
SELECT t.upload_images() AS image_rounds;
SELECT * FROM t.tick();
UPDATE hagen.job SET run_at = now() WHERE status = 'queued';
SELECT job_id AS running_job, token AS running_token FROM hagen.claim_jobs('http', 1) \gset
SELECT (hagen.cancel_video(:'p')) ->> 'status' AS status;
SELECT kind, step, status, cancel_requested FROM hagen.job WHERE project_id = :'p' ORDER BY id;
SELECT hagen.complete_job(:running_job, :running_token,
	'{"status": 202, "body_text": "{\"status\": \"IN_PROGRESS\", \"logs\": null}"}');
SELECT j.kind, j.status, j.state ->> 'request_id' AS request_id, e.effect ->> 'method' AS method,
       e.effect ->> 'url' AS url
FROM hagen.claim_jobs('http', 10) e JOIN hagen.job j ON j.id = e.job_id ORDER BY j.id;
UPDATE hagen.job SET status = 'queued', lease_token = NULL WHERE status = 'running' AND kind = 'cancel';
SELECT * FROM t.tick();
SELECT status, progress ->> 'label' AS label FROM hagen.video_project WHERE id = :'p';
SELECT sequence_order, status, transition_status FROM hagen.video_clip WHERE project_id = :'p' ORDER BY 1;
SELECT hagen.cancel_video(:'p') ->> 'note' AS again;
SELECT t.err(format('SELECT hagen.start_video(%L)', :'p'));

-- 3. Retry: only the canceled clips are generated again, then compiled.
UPDATE hagen.video_clip SET status = 'completed', clip_url = 'https://cdn.example.com/kept.mp4'
WHERE project_id = :'p' AND sequence_order = 0;
SELECT (hagen.retry_video(:'p')) -> 'enqueued_jobs' AS enqueued;
SELECT c.sequence_order, j.kind FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id
WHERE j.project_id = :'p' AND j.status = 'queued' ORDER BY 1, 2;
SELECT t.run() > 0 AS ran;
SELECT status, completed_clips, error_message FROM hagen.video_project WHERE id = :'p';
SELECT clip_url FROM hagen.video_clip WHERE project_id = :'p' AND sequence_order = 0;
SELECT (hagen.retry_video(:'p')) ->> 'note' AS nothing_left;

-- 4. An unconfirmed submit is sent again only by retry_video.
SELECT t.project('ws-unconfirmed') AS p \gset
INSERT INTO t.script (kind, clip_seq, step, outcome, times) VALUES ('clip', 2, 'submit',
	'{"status": 502, "body_text": "<html>Bad Gateway</html>"}', 1);
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.run() > 0 AS ran;
SELECT status, completed_clips, failed_clips FROM hagen.video_project WHERE id = :'p';
SELECT (hagen.retry_video(:'p')) -> 'enqueued_jobs' AS resubmits;
SELECT t.run() > 0 AS ran;
SELECT status, completed_clips, failed_clips, error_message FROM hagen.video_project WHERE id = :'p';

-- 5. The xAI adapter: its request shapes and both answer shapes.
SELECT t.project('ws-xai', 'xai') AS p \gset
SELECT (hagen.start_video(:'p')) -> 'estimated_cost_cents' AS estimate;
SELECT e.effect ->> 'url' AS url, e.effect ->> 'auth' AS auth, e.effect -> 'body' AS body
FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL WHERE status = 'running';
DELETE FROM t.script;
INSERT INTO t.script (kind, clip_seq, step, outcome, times) SELECT 'clip', s, 'submit',
	jsonb_build_object('status', 200, 'body_text', format('{"request_id": "xai-%s"}', s)), 1
FROM generate_series(0, 2) s;
INSERT INTO t.script (kind, clip_seq, step, outcome, times) VALUES
	('transition', 1, 'submit', '{"status": 200, "body_text": "{\"request_id\": \"xai-t1\"}"}', 1),
	('clip', 0, 'poll', '{"status": 202, "body_text": ""}', 1),
	('clip', 0, 'poll', '{"status": 200, "body_text": "{\"status\": \"done\", \"video\": {\"url\": \"https://vidgen.x.ai/a.mp4\", \"duration\": 5, \"respect_moderation\": true}, \"model\": \"grok-imagine-video\", \"progress\": 100}"}', 1),
	('clip', 1, 'poll', '{"status": 200, "body_text": "{\"video\": {\"url\": \"https://vidgen.x.ai/legacy.mp4\", \"duration\": 5}, \"model\": \"grok-imagine-video\"}"}', 1),
	('clip', 2, 'poll', '{"status": 200, "body_text": "{\"status\": \"failed\", \"error\": {\"code\": \"invalid_argument\", \"message\": \"Prompt cannot be empty.\"}}"}', 1),
	('transition', 1, 'poll', '{"status": 200, "body_text": "{\"status\": \"done\", \"video\": {\"url\": \"\", \"respect_moderation\": false}}"}', 1);
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT * FROM t.tick();
SELECT c.sequence_order, j.kind, j.status, j.step, j.request_id, j.state ->> 'video_url' AS video_url, j.last_error
FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id WHERE j.project_id = :'p' ORDER BY j.id;
SELECT t.run() > 0 AS ran;
SELECT status, completed_clips, failed_clips, actual_cost_cents, error_message FROM hagen.video_project WHERE id = :'p';

-- 6. A worker that restarts takes its lane's orphaned jobs up at once.
SELECT t.project('ws-recover') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() AS image_rounds;
SELECT count(*) AS submitted FROM t.tick();
UPDATE hagen.job SET run_at = now() WHERE status = 'queued';
SELECT count(*) AS claimed FROM hagen.claim_jobs('http', 100);
UPDATE hagen.job SET lease_owner = 999999 WHERE status = 'running';
SELECT hagen.recover_jobs('http') AS recovered;
SELECT hagen.next_due('http') AS due_ms;
SELECT hagen.next_due('compile') IS NULL AS compile_idle;
SELECT t.run() > 0 AS ran;
SELECT status FROM hagen.video_project WHERE id = :'p';

-- 7. Heartbeats keep a lease and report progress; a canceled job is told to stop.
SELECT t.project('ws-beat') AS p \gset
UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = :'p';
UPDATE hagen.video_clip SET transition_status = 'completed' WHERE project_id = :'p' AND sequence_order = 1;
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
-- Its inputs are fetched (here: found in the work directory), then it
-- moves to the compile lane.
SELECT kind, step, status FROM t.tick() ORDER BY kind, step, status;
SELECT kind, step, status FROM t.tick() ORDER BY kind, step, status;
SELECT kind, step, status FROM t.tick();
SELECT job_id AS cj, token AS ct FROM hagen.claim_jobs('compile', 1) \gset
-- hagen-compile reports a fraction; SQL alone makes it the percent.
SELECT hagen.heartbeat(:cj, :ct, '{"fraction": 0.5}') AS keep;
SELECT progress FROM hagen.video_project WHERE id = :'p';
SELECT hagen.heartbeat(:cj, :ct + 1) AS wrong_token;
SELECT (hagen.cancel_video(:'p')) ->> 'status' AS status;
SELECT hagen.heartbeat(:cj, :ct) AS keep_after_cancel;
SELECT hagen.complete_job(:cj, :ct, '{"status": "error", "error": "killed"}');
SELECT kind, status, count(*) FROM hagen.job WHERE project_id = :'p' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS left_running FROM hagen.job
WHERE status IN ('queued', 'running') AND kind <> 'cleanup';
-- Once nothing of the canceled project runs, its work files are removed.
SELECT kind, status, state ->> 'reason' AS reason FROM hagen.job
WHERE kind = 'cleanup' AND state ->> 'dir' = :'p';
SELECT kind, step, status FROM t.tick() WHERE kind = 'cleanup';

-- 8. Views for dashboards, and history retention.
SELECT t.project('ws-views') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() AS image_rounds;
SELECT count(*) AS submitted FROM t.tick();
SELECT workspace_id, status, clip_count, percent, label, live_jobs, eta > started_at AS has_eta
FROM hagen.active_projects;
SELECT kind, provider, request_id, provider_status, step FROM hagen.provider_requests ORDER BY job_id;
SELECT t.run() > 0 AS ran;
SELECT count(*) AS active FROM hagen.active_projects;
UPDATE hagen.job_log SET logged_at = now() - interval '15 days' WHERE project_id = :'p';
UPDATE hagen.job SET finished_at = now() - interval '15 days' WHERE project_id = :'p';
SELECT hagen.purge_history() > 0 AS purged;
SELECT count(*) AS jobs_left, (SELECT count(*) FROM hagen.job_log WHERE project_id = :'p') AS log_left
FROM hagen.job WHERE project_id = :'p';
SELECT status, final_video_url IS NOT NULL AS has_video FROM hagen.video_project WHERE id = :'p';

-- 9. Crossfades: every cut between clips fades when the project asks for
-- it; a seamless transition and the clips it joins never do, nor the first
-- segment.  Clip 3 failed: clip 2 then cuts (and fades) straight to clip 4.
SELECT hagen.create_project('ws-xfade', crossfade => 0.5) AS p \gset
SELECT hagen.add_clip(:'p', 'https://img.example.com/x' || i || '.jpg', room_label => 'Room ' || i,
					  transition_type => CASE WHEN i = 1 THEN 'seamless' ELSE 'cut' END) IS NOT NULL AS added
FROM generate_series(0, 4) i;
UPDATE hagen.video_clip SET status = CASE WHEN sequence_order = 3 THEN 'failed' ELSE 'completed' END,
	transition_status = CASE WHEN sequence_order = 1 THEN 'completed' END
WHERE project_id = :'p';
SELECT s ->> 'kind' AS kind, s ->> 'label' AS label, s -> 'crossfade' AS crossfade
FROM jsonb_array_elements(hagen._compile_segments((SELECT p FROM hagen.video_project p WHERE id = :'p'))) s;
-- Without a crossfade every segment says 0 (hard cuts).
UPDATE hagen.video_project SET crossfade = 0 WHERE id = :'p';
SELECT jsonb_path_query_array(hagen._compile_segments((SELECT p FROM hagen.video_project p WHERE id = :'p')),
							  '$[*].crossfade') AS crossfades;

-- 10. A re-encode split into chunks (the happy path: sql/engine.sql):
-- a chunk that fails for good, a cancel, a worker on another host, a
-- compile that stays one run, retry.
-- A project of n clips with 0.5 s crossfades, generated, compiling, its
-- inputs fetched; returns it once its compile waits for its chunks (or has
-- gone on to compile in one run).
CREATE FUNCTION t.xfade_project(ws text, n integer DEFAULT 6) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	p uuid := hagen.create_project(ws, crossfade => 0.5);
BEGIN
	PERFORM hagen.add_clip(p, 'https://img.example.com/' || ws || i || '.jpg', room_label => 'Room ' || i)
	FROM generate_series(1, n) i;
	UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = p;
	PERFORM hagen.start_video(p);
	FOR i IN 1 .. 6 LOOP
		EXIT WHEN (SELECT step FROM hagen.job WHERE project_id = p AND kind = 'compile'
				   AND status IN ('queued', 'running')) IN ('chunks', 'compile');
		PERFORM t.tick('http');
		PERFORM t.tick('compile');
	END LOOP;
	RETURN p;
END;
$$;

-- A chunk that fails for good fails the project, naming it; the other
-- chunks stop, and what was stored of them is deleted.
SELECT t.xfade_project('ws-chunkfail') AS p \gset
SELECT step FROM hagen.job WHERE project_id = :'p' AND kind = 'compile';
SELECT job_id AS c1, token AS t1 FROM hagen.claim_jobs('compile', 1) \gset
SELECT job_id AS c2, token AS t2 FROM hagen.claim_jobs('compile', 1) \gset
SELECT hagen.complete_job(:c1, :t1, '{"status": "error", "error": "segment 2 (Room 2) is damaged: reading it failed: Invalid data found when processing input", "segment": 2}');
SELECT state -> 'number' AS n, status, attempts, last_error FROM hagen.job WHERE id = :c1;
-- An answer that is not a chunk's result is a failure too.
UPDATE hagen.job SET run_at = now() - interval '1 minute' WHERE id = :c1;
SELECT job_id AS c1, token AS t1 FROM hagen.claim_jobs('compile', 1) \gset
SELECT hagen.complete_job(:c1, :t1, '{"status": "ok", "result": {"task": "chunk", "frames": 228}}');
SELECT state -> 'number' AS n, status, last_error FROM hagen.job WHERE id = :c1;
SELECT kind, step, verdict, next_step, status FROM t.tick() WHERE kind = 'compile';
SELECT status, error_message, progress ->> 'label' AS label FROM hagen.video_project WHERE id = :'p';
SELECT state -> 'number' AS n, step, status, cancel_requested FROM hagen.job
WHERE project_id = :'p' AND kind = 'chunk' ORDER BY id;
-- The chunk still encoding is told to stop at its next heartbeat.
SELECT hagen.heartbeat(:c2, :t2, '{"fraction": 0.4}') AS keep;
SELECT hagen.complete_job(:c2, :t2, '{"status": "error", "error": "the compile was canceled"}');
SELECT kind, status, regexp_replace(t.mask(state ->> 'prefix'), '/chunks/\d+/', '/chunks/<job>/') AS prefix
FROM hagen.job WHERE kind IN ('purge', 'cleanup') AND (state ->> 'project_id' = :'p' OR state ->> 'dir' = :'p')
ORDER BY id;
SELECT count(*) AS live FROM hagen.job WHERE project_id = :'p' AND status IN ('queued', 'running');
SELECT count(*) AS answered FROM t.tick();
-- retry_video compiles again, its chunks under a prefix of their own.
SELECT (hagen.retry_video(:'p')) ->> 'status' AS status;
SELECT t.run() > 0 AS ran;
SELECT status, error_message, duration FROM hagen.video_project WHERE id = :'p';
SELECT count(DISTINCT j.parent_id) AS compiles, count(*) AS chunks,
       count(DISTINCT regexp_replace(j.state ->> 'key', '[^/]+$', '')) AS prefixes,
       count(*) FILTER (WHERE j.status = 'succeeded') AS succeeded
FROM hagen.job j WHERE j.project_id = :'p' AND j.kind = 'chunk';
SELECT status, state -> 'deleted' AS deleted FROM hagen.job
WHERE kind = 'purge' AND state ->> 'project_id' = :'p' ORDER BY id;

-- Cancel while chunks encode: the queued ones stop at once, the running
-- one at its next heartbeat; the chunks' objects are deleted once its
-- helper has stopped (a heartbeat comes every 2 s), and the work files
-- once nothing runs.
SELECT t.xfade_project('ws-chunkcancel') AS p \gset
SELECT job_id AS c1, token AS t1 FROM hagen.claim_jobs('compile', 1) \gset
SELECT (hagen.cancel_video(:'p')) ->> 'status' AS status;
SELECT kind, state -> 'number' AS n, status, cancel_requested FROM hagen.job
WHERE project_id = :'p' AND kind IN ('compile', 'chunk') ORDER BY id;
SELECT run_at > now() AS waits_for_the_running_chunk, run_at <= now() + interval '10 seconds' AS at_most_10_s
FROM hagen.job WHERE kind = 'purge' AND state ->> 'project_id' = :'p';
SELECT hagen.heartbeat(:c1, :t1) AS keep;
SELECT hagen.complete_job(:c1, :t1, '{"status": "error", "error": "the compile was canceled"}');
SELECT kind, status FROM hagen.job WHERE kind = 'cleanup' AND state ->> 'dir' = :'p';
SELECT status, progress ->> 'label' AS label FROM hagen.video_project WHERE id = :'p';

-- A worker on another host stores its chunk itself; the join fetches it
-- from the bucket into the path the chunk's attempt named.
SELECT t.xfade_project('ws-chunkremote', 4) AS p \gset
SELECT job_id AS c1, token AS t1, effect -> 'outputs' -> 0 ->> 'file' AS remote_file
FROM hagen.claim_jobs('compile', 1) \gset
SELECT hagen.complete_job(:c1, :t1, t.fake_chunk((SELECT state -> 'manifest' FROM hagen.job WHERE id = :c1))
	|| '{"uploaded": true, "worker": "host-b"}');
SELECT step, status, t.mask(l.message) AS message FROM hagen.job j
JOIN hagen.job_log l ON l.job_id = j.id AND l.message LIKE '%host-b%' WHERE j.id = :c1;
SELECT t.run() > 0 AS ran;
SELECT count(*) AS fetched_to_its_path FROM hagen.job
WHERE project_id = :'p' AND kind = 'fetch' AND state ->> 'file' = :'remote_file' AND status = 'succeeded';
SELECT status, duration FROM hagen.video_project WHERE id = :'p';

-- A compile stays one run when the plan finds nothing to split: clips
-- shorter than hagen.compile_chunk_length in all, or (the probe says) no
-- re-encode at all.
SELECT t.xfade_project('ws-chunkshort', 2) AS p \gset
SELECT j.step, t.mask(l.message) AS message FROM hagen.job j
JOIN hagen.job_log l ON l.job_id = j.id AND l.message LIKE '%one run%' WHERE j.project_id = :'p' AND j.kind = 'compile';
INSERT INTO t.script (kind, clip_seq, step, outcome, times) VALUES ('compile', NULL, 'plan',
	'{"status": "ok", "result": {"task": "plan", "mode": "copy_video", "duration": 30, "segments": [{}, {}, {}, {}, {}, {}]}}', 1);
SELECT t.xfade_project('ws-chunkcopy') AS p \gset
SELECT j.step, t.mask(l.message) AS message FROM hagen.job j
JOIN hagen.job_log l ON l.job_id = j.id AND l.message LIKE '%one run%' WHERE j.project_id = :'p' AND j.kind = 'compile';
SELECT t.run() > 0 AS ran;
SELECT count(*) FILTER (WHERE kind = 'chunk') AS chunks, min(status) FILTER (WHERE kind = 'compile') AS compile
FROM hagen.job WHERE project_id IN (SELECT id FROM hagen.video_project WHERE workspace_id IN ('ws-chunkshort', 'ws-chunkcopy'));
SELECT count(*) AS leftover FROM hagen.job WHERE status IN ('queued', 'running');
-- The chunks' purges are done; later tests look at purges of their own.
DELETE FROM hagen.job WHERE kind = 'purge' AND status = 'succeeded' AND state ->> 'prefix' LIKE '%/chunks/%';
