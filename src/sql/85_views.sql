-- hagenkit install script, part 85: views for dashboards and operators,
-- and the retention of history.

-- Projects being worked on, with their progress and an estimate of when
-- they finish (from the pace of the run so far).
CREATE VIEW hagen.active_projects AS
SELECT p.id AS project_id, p.workspace_id, p.status, p.provider, p.clip_count,
	   p.completed_clips, p.failed_clips,
	   (p.progress ->> 'percent')::numeric AS percent, p.progress ->> 'label' AS label,
	   p.started_at, now() - p.started_at AS elapsed,
	   CASE WHEN (p.progress ->> 'percent')::numeric BETWEEN 1 AND 99
			THEN p.started_at + (now() - p.started_at) * (100 / (p.progress ->> 'percent')::numeric)
	   END AS eta,
	   (SELECT count(*) FROM hagen.job j WHERE j.project_id = p.id
		AND j.status IN ('queued', 'running')) AS live_jobs
FROM hagen.video_project p
WHERE p.status IN ('generating', 'compiling');

-- Provider requests in flight: submitted and not yet answered for good.
CREATE VIEW hagen.provider_requests AS
SELECT j.id AS job_id, j.project_id, j.clip_id, j.kind, j.provider, j.request_id,
	   j.state ->> 'provider_status' AS provider_status,
	   (j.state ->> 'queue_position')::integer AS queue_position,
	   j.step, j.status, j.attempts, j.started_at, now() - j.started_at AS age, j.deadline_at
FROM hagen.job j
WHERE j.request_id IS NOT NULL AND j.status IN ('queued', 'running')
  AND j.step IN ('poll', 'result');

-- Deletes job history older than hagen.log_retention (default 14 days):
-- log lines, and finished jobs of finished projects (and of none: purges).
-- Returns the number of rows removed.  The dispatcher calls it about once
-- an hour.
CREATE FUNCTION hagen.purge_history(older_than interval DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql AS $$
DECLARE
	keep interval := coalesce(older_than, hagen._setting_interval('hagen.log_retention', '14 days'));
	n bigint;
	m bigint;
BEGIN
	DELETE FROM hagen.job_log WHERE logged_at < now() - keep;
	GET DIAGNOSTICS n = ROW_COUNT;
	DELETE FROM hagen.job j
	WHERE j.finished_at < now() - keep AND j.status IN ('succeeded', 'failed', 'canceled')
	  AND (j.project_id IS NULL
		   OR EXISTS (SELECT 1 FROM hagen.video_project p WHERE p.id = j.project_id
					  AND p.status IN ('completed', 'failed', 'canceled')));
	GET DIAGNOSTICS m = ROW_COUNT;
	RETURN n + m;
END;
$$;
