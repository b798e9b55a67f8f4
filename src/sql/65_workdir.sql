-- hagenkit install script, part 65: the work directory.
--
-- Each project keeps its downloaded and compiled media in a directory of
-- its own under hagen.work_dir, named by its id.  Once a project has ended
-- (completed, failed or canceled) and none of its jobs still runs, or it is
-- deleted, a cleanup job removes that directory (the effect "remove": the
-- directory is renamed aside, then deleted).  A sweep, about once an hour,
-- removes what a crash left behind: any directory older than
-- hagen.work_retention that no live project or job uses.

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
