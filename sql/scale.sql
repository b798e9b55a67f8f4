-- The engine at scale: a project's progress kept step by step equals the
-- recount the engine used to do; polls that learn nothing write no log;
-- when to poll again.  (Runs after engine and storage: it uses their
-- helpers in schema t.)
\pset null '(null)'
UPDATE hagen.job SET status = 'canceled' WHERE status IN ('queued', 'running');

-- 1. The counters and the progress, checked at every change of every
-- generating project against the recount from its jobs and clips (what
-- _advance_project computed before 0.4, at the same moments): the run's
-- jobs, how many ended, the sum of their fractions, the clip counts and
-- cost, and each new progress against the old formula.
CREATE TABLE t.progress_check (id serial, project uuid, what text, ok boolean, detail text);
CREATE FUNCTION t.check_progress() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	n_all integer;
	n_done integer;
	fsum numeric;
	favg numeric;
	clips integer;
	ok_clips integer;
	bad_clips integer;
	cost integer;
	want jsonb;
BEGIN
	-- Check every change of the counters or the progress of a generating
	-- run, but the start of a run (its counters are set a few statements
	-- later, by _count_run).
	IF NEW.status <> 'generating' OR NEW.started_at IS DISTINCT FROM OLD.started_at
	   OR ((NEW.run_jobs, NEW.run_jobs_done, NEW.run_fraction, NEW.clip_count, NEW.completed_clips,
			NEW.failed_clips, NEW.actual_cost_cents, NEW.progress)
		   IS NOT DISTINCT FROM (OLD.run_jobs, OLD.run_jobs_done, OLD.run_fraction, OLD.clip_count,
								 OLD.completed_clips, OLD.failed_clips, OLD.actual_cost_cents, OLD.progress)) THEN
		RETURN NULL;
	END IF;
	SELECT count(*), count(*) FILTER (WHERE q.status NOT IN ('queued', 'running')),
		   coalesce(sum(hagen._job_fraction(q)), 0), avg(hagen._job_fraction(q))
	INTO n_all, n_done, fsum, favg
	FROM hagen.job q WHERE q.project_id = NEW.id AND q.kind IN ('clip', 'transition')
	  AND q.created_at >= NEW.started_at;
	SELECT count(*), count(*) FILTER (WHERE status = 'completed'),
		   count(*) FILTER (WHERE status IN ('failed', 'canceled')), coalesce(sum(cost_cents), 0)
	INTO clips, ok_clips, bad_clips, cost FROM hagen.video_clip WHERE project_id = NEW.id;
	INSERT INTO t.progress_check (project, what, ok, detail) VALUES (NEW.id, 'counters',
		(NEW.run_jobs, NEW.run_jobs_done, NEW.run_fraction, NEW.clip_count, NEW.completed_clips,
		 NEW.failed_clips, NEW.actual_cost_cents) = (n_all, n_done, fsum, clips, ok_clips, bad_clips, cost),
		format('kept %s/%s/%s/%s/%s/%s/%s, recounted %s/%s/%s/%s/%s/%s/%s', NEW.run_jobs, NEW.run_jobs_done,
			   NEW.run_fraction, NEW.clip_count, NEW.completed_clips, NEW.failed_clips, NEW.actual_cost_cents,
			   n_all, n_done, fsum, clips, ok_clips, bad_clips, cost));
	IF NEW.progress IS DISTINCT FROM OLD.progress AND NEW.progress ->> 'step' = 'generating'
	   AND n_done < n_all THEN
		want := jsonb_build_object('step', 'generating',
			'label', format('Generating clips (%s of %s done)', n_done, n_all),
			'percent', greatest(coalesce((OLD.progress ->> 'percent')::numeric, 0),
								least(100, round(coalesce(85.0 * favg, 0), 1))));
		INSERT INTO t.progress_check (project, what, ok, detail)
		VALUES (NEW.id, 'progress', NEW.progress = want, format('%s, recounted %s', NEW.progress, want));
	END IF;
	RETURN NULL;
END;
$$;
CREATE TRIGGER zz_check_progress AFTER UPDATE ON hagen.video_project
	FOR EACH ROW EXECUTE FUNCTION t.check_progress();
-- The progress of one project as it moved, in order.
CREATE TABLE t.seen (id serial, project uuid, progress jsonb);
CREATE FUNCTION t.see() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO t.seen (project, progress) VALUES (NEW.id, NEW.progress);
	RETURN NULL;
END;
$$;
CREATE TRIGGER zz_see AFTER UPDATE ON hagen.video_project
	FOR EACH ROW WHEN (NEW.progress IS DISTINCT FROM OLD.progress) EXECUTE FUNCTION t.see();

-- A happy run: three clips and a transition.
SELECT t.project('ws-scale-happy') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.run() > 0 AS ran;
SELECT progress ->> 'label' AS label, progress -> 'percent' AS percent
FROM t.seen WHERE project = :'p' ORDER BY id;
SELECT status, clip_count, completed_clips, run_jobs, run_jobs_done, run_fraction
FROM hagen.video_project WHERE id = :'p';

-- Faults: Retry-After, 503, a lost submit answer, a 422 at result time,
-- malformed JSON.
SELECT t.project('ws-scale-faults') AS p \gset
DELETE FROM t.script;
INSERT INTO t.script (kind, clip_seq, step, outcome, times) VALUES
	('clip', 0, 'submit', '{"status": 429, "headers": {"retry-after": "30"}, "body_text": "{\"detail\": \"Rate limited\"}"}', 1),
	('clip', 0, 'poll', '{"status": 503, "body_text": "<html>busy</html>"}', 1),
	('clip', 1, 'submit', '{"status": 0, "error": "timed out", "phase": "transfer"}', 1),
	('clip', 2, 'result', '{"status": 422, "body_text": "{\"detail\": [{\"msg\": \"Prompt violates the content policy\", \"type\": \"content_policy_violation\"}]}"}', 1),
	('transition', 1, 'poll', '{"status": 200, "body_text": "{not json"}', 1);
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.run() > 0 AS ran;
SELECT status, completed_clips, failed_clips FROM hagen.video_project WHERE id = :'p';

-- Every clip fails.
SELECT t.project('ws-scale-allfail') AS p \gset
INSERT INTO t.script (kind, clip_seq, step, outcome, times) SELECT 'clip', s, 'submit',
	'{"status": 403, "body_text": "{\"detail\": \"User is locked.\"}"}', 1
FROM generate_series(0, 2) s;
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.run() > 0 AS ran;
SELECT status, failed_clips FROM hagen.video_project WHERE id = :'p';

-- Canceled while running (one effect still out), then retried.
SELECT t.project('ws-scale-cancel') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() > 0 AS images;
SELECT count(*) AS submitted FROM t.tick();
UPDATE hagen.job SET run_at = now() WHERE status = 'queued';
SELECT job_id AS running_job, token AS running_token FROM hagen.claim_jobs('http', 1) \gset
SELECT (hagen.cancel_video(:'p')) ->> 'status' AS status;
SELECT hagen.complete_job(:running_job, :running_token,
	'{"status": 202, "body_text": "{\"status\": \"IN_PROGRESS\", \"logs\": null}"}');
SELECT t.run() >= 0 AS ran;
SELECT (hagen.retry_video(:'p')) -> 'enqueued_jobs' AS enqueued;
SELECT t.run() > 0 AS ran;
SELECT status, completed_clips FROM hagen.video_project WHERE id = :'p';

-- xAI, whose polls report progress.
SELECT t.project('ws-scale-xai', 'xai') AS p \gset
DELETE FROM t.script;
INSERT INTO t.script (kind, clip_seq, step, outcome, times) VALUES
	('clip', 0, 'poll', '{"status": 202, "body_text": "{\"status\": \"pending\", \"progress\": 10}"}', 1),
	('clip', 0, 'poll', '{"status": 202, "body_text": "{\"status\": \"pending\", \"progress\": 65.5}"}', 1),
	('clip', 0, 'poll', '{"status": 202, "body_text": "{\"status\": \"pending\", \"progress\": 65.5}"}', 1);
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.run() > 0 AS ran;
SELECT status, completed_clips FROM hagen.video_project WHERE id = :'p';

-- A clip stored in a multipart upload: the progress follows its parts.
SELECT t.clip_at_download('ws-scale-multi', 209715200) AS p \gset
SELECT t.s3_run() > 0 AS ran;
SELECT status FROM hagen.video_project WHERE id = :'p';
-- (Its compile is not run here.)
UPDATE hagen.job SET status = 'canceled' WHERE status IN ('queued', 'running');

-- Every check, over all these runs.
SELECT what, count(*) > 0 AS checked, count(*) FILTER (WHERE NOT ok) AS mismatches
FROM t.progress_check GROUP BY what ORDER BY what;
SELECT what, t.mask(detail) AS detail FROM t.progress_check WHERE NOT ok ORDER BY id LIMIT 5;

-- 2. A poll that only learns "still in progress" writes no log row: the
-- job keeps count (polls) and when it last heard (polled_ms, updated_at).
-- A new status does not log either, as before; a new step does.
SELECT t.project('ws-scale-polls') AS p \gset
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() > 0 AS images;
SELECT count(*) AS submitted FROM t.tick();
SELECT id AS job FROM hagen.job WHERE project_id = :'p' AND kind = 'clip'
ORDER BY id LIMIT 1 \gset
DELETE FROM t.script;
INSERT INTO t.script (kind, clip_seq, step, outcome, times) VALUES
	('clip', 0, 'poll', '{"status": 202, "body_text": "{\"status\": \"IN_QUEUE\", \"queue_position\": 2}"}', 1),
	('clip', 0, 'poll', '{"status": 202, "body_text": "{\"status\": \"IN_PROGRESS\", \"logs\": null}"}', 3);
SELECT count(*) AS log_rows_before FROM hagen.job_log WHERE job_id = :job \gset
SELECT (state ->> 'submitted_ms')::bigint AS submitted_ms, updated_at AS submitted_at
FROM hagen.job WHERE id = :job \gset
SELECT s.step, s.verdict, s.next_step FROM t.tick() s WHERE s.kind = 'clip' AND s.seq = 0;
SELECT s.step, s.verdict, s.next_step FROM t.tick() s WHERE s.kind = 'clip' AND s.seq = 0;
SELECT s.step, s.verdict, s.next_step FROM t.tick() s WHERE s.kind = 'clip' AND s.seq = 0;
SELECT s.step, s.verdict, s.next_step FROM t.tick() s WHERE s.kind = 'clip' AND s.seq = 0;
SELECT (SELECT count(*) FROM hagen.job_log WHERE job_id = :job) - :log_rows_before AS new_log_rows,
	   state -> 'polls' AS polls, state -> 'queue_polls' AS queue_polls,
	   state ->> 'provider_status' AS provider_status, state -> 'queue_position' AS queue_position,
	   (state ->> 'polled_ms')::bigint >= :submitted_ms AS polled_ms_kept,
	   state ? 'generating_since_ms' AS generating_since_kept, updated_at > :'submitted_at' AS updated
FROM hagen.job WHERE id = :job;
-- The answer that shows it done is a new step: logged, with how long the
-- generation took as the engine saw it.
SELECT s.step, s.verdict, s.next_step FROM t.tick() s WHERE s.kind = 'clip' AND s.seq = 0;
SELECT (SELECT count(*) FROM hagen.job_log WHERE job_id = :job) - :log_rows_before AS new_log_rows,
	   (state ->> 'generation_ms')::bigint BETWEEN 0 AND (state ->> 'polled_ms')::bigint - :submitted_ms
		   AS generation_ms_recorded
FROM hagen.job WHERE id = :job;
SELECT message FROM hagen.job_log WHERE job_id = :job AND id > (
	SELECT id FROM hagen.job_log WHERE job_id = :job ORDER BY id OFFSET :log_rows_before - 1 LIMIT 1) ORDER BY id;
SELECT t.run() > 0 AS ran;

-- 3. When to poll again.  hagen.poll_interval is 10 ms here, so the cases
-- are in tens of milliseconds (a typical time of 900 ms is 90 intervals,
-- as 3 minutes are at the default of 2 s).  In the queue, the interval
-- grows by half at each poll and with the requests ahead, up to 8
-- intervals; generating with no typical time, it grows by half at each
-- poll; with a typical time, one poll just before the expected end (5 %
-- before it), then the interval, growing by a quarter of the delay as the
-- generation runs late; with the provider's progress (xAI), halfway to the
-- end it predicts.  The time now is 1000000 ms.
SELECT what, hagen._poll_delay_ms(st::jsonb, 1000000) AS delay_ms FROM (VALUES
	(1, 'queued, 1st poll, none ahead', '{"queue_polls": 1, "queue_position": 0}'),
	(2, 'queued, 3rd poll, none ahead', '{"queue_polls": 3, "queue_position": 0}'),
	(3, 'queued, 1st poll, 2 ahead', '{"queue_polls": 1, "queue_position": 2}'),
	(4, 'queued, 9th poll, 40 ahead', '{"queue_polls": 9, "queue_position": 40}'),
	(5, 'generating, no typical time, 1st poll', '{"polls": 2, "queue_polls": 1, "generating_since_ms": 999990}'),
	(6, 'generating, no typical time, 4th poll', '{"polls": 5, "queue_polls": 1, "generating_since_ms": 999900}'),
	(7, 'generating, no typical time, 20th poll', '{"polls": 21, "queue_polls": 1, "generating_since_ms": 999000}'),
	(8, 'typical 900, 20 in', '{"polls": 2, "generating_since_ms": 999980, "typical_ms": 900}'),
	(9, 'typical 900, 860 in', '{"polls": 3, "generating_since_ms": 999140, "typical_ms": 900}'),
	(10, 'typical 900, 910 in', '{"polls": 4, "generating_since_ms": 999090, "typical_ms": 900}'),
	(11, 'typical 900, 1200 in', '{"polls": 9, "generating_since_ms": 998800, "typical_ms": 900}'),
	(12, 'typical 900, 3000 in', '{"polls": 30, "generating_since_ms": 997000, "typical_ms": 900}'),
	(13, 'typical unknown (0)', '{"polls": 2, "generating_since_ms": 999990, "typical_ms": 0}'),
	(14, 'progress 40 % after 200', '{"polls": 3, "generating_since_ms": 999800, "provider_progress": 40}'),
	(15, 'progress 97 % after 580', '{"polls": 6, "generating_since_ms": 999420, "provider_progress": 97}')
) AS cases(n, what, st) ORDER BY n;

-- A model's typical time: the median of its last 20 recorded
-- generations, once it has 3.
INSERT INTO hagen.job (project_id, kind, provider, status, step, state)
SELECT :'p', 'cancel', 'fal', 'succeeded', 'cancel',
	   jsonb_build_object('model', 'test/model', 'generation_ms', g)
FROM unnest(ARRAY[60000, 90000]) g;
SELECT hagen._typical_generation_ms('fal', 'test/model') AS with_two;
INSERT INTO hagen.job (project_id, kind, provider, status, step, state)
SELECT :'p', 'cancel', 'fal', 'succeeded', 'cancel',
	   jsonb_build_object('model', 'test/model', 'generation_ms', g)
FROM unnest(ARRAY[120000, 61000, 62000]) g;
SELECT hagen._typical_generation_ms('fal', 'test/model') AS with_five,
	   hagen._typical_generation_ms('xai', 'test/model') AS other_provider;
EXPLAIN (COSTS OFF) SELECT (q.state ->> 'generation_ms') FROM hagen.job q
WHERE q.provider = 'fal' AND q.state ->> 'model' = 'test/model' AND q.state ? 'generation_ms'
ORDER BY q.id DESC LIMIT 20;
DELETE FROM hagen.job WHERE state ->> 'model' = 'test/model';

-- Through the engine: with 20 generations of Kling v2.6 of 3.4 s each
-- recorded, a job that starts generating sleeps until just before the end
-- it expects.
SELECT t.project('ws-scale-typical') AS p \gset
INSERT INTO hagen.job (project_id, kind, provider, status, step, state)
SELECT :'p', 'cancel', 'fal', 'succeeded', 'cancel',
	   jsonb_build_object('model', 'fal-ai/kling-video/v2.6/pro/image-to-video', 'generation_ms', 3400)
FROM generate_series(1, 20);
SELECT (hagen.start_video(:'p')) ->> 'status' AS status;
SELECT t.upload_images() > 0 AS images;
SELECT count(*) AS submitted FROM t.tick();
SELECT count(*) AS queued_polls FROM t.tick();
SELECT s.step, s.next_step FROM t.tick() s WHERE s.kind = 'clip' AND s.seq = 0;
SELECT state ->> 'provider_status' AS provider_status, state -> 'typical_ms' AS typical_ms,
	   run_at - now() BETWEEN interval '2.9 s' AND interval '3.3 s' AS sleeps_to_the_end
FROM hagen.job WHERE project_id = :'p' AND kind = 'clip' ORDER BY id LIMIT 1;
SELECT t.run() > 0 AS ran;

DROP TRIGGER zz_check_progress ON hagen.video_project;
DROP TRIGGER zz_see ON hagen.video_project;

-- 4. The log has no foreign keys (see hagen.job_log): deleting a project
-- deletes its lines and its jobs' lines, as the foreign keys did, and a
-- purge of old jobs their lines; no line is left naming a job or a project
-- that is gone.
SELECT count(*) > 0 AS has_lines FROM hagen.job_log WHERE project_id = :'p';
DELETE FROM hagen.video_project WHERE id = :'p';
SELECT count(*) AS project_lines_left FROM hagen.job_log WHERE project_id = :'p';
UPDATE hagen.job SET finished_at = now() - interval '30 days' WHERE status NOT IN ('queued', 'running');
SELECT hagen.purge_history(interval '20 days') > 0 AS purged;
SELECT count(*) FILTER (WHERE l.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM hagen.job j WHERE j.id = l.job_id))
		AS lines_of_gone_jobs,
	   count(*) FILTER (WHERE l.project_id IS NOT NULL
						AND NOT EXISTS (SELECT 1 FROM hagen.video_project p WHERE p.id = l.project_id))
		AS lines_of_gone_projects
FROM hagen.job_log l;
