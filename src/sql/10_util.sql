-- hagenkit install script, part 10: small helpers shared by everything else.

-- Functions implemented in C (src/shmem.c, src/sql_funcs.c).
CREATE FUNCTION hagen._wake() RETURNS void
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hagen_wake';
COMMENT ON FUNCTION hagen._wake() IS
	'Wakes the hagenkit workers of every lane when the calling transaction commits.';

CREATE FUNCTION hagen.provider_configured(provider text) RETURNS boolean
	LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'hagen_provider_configured';
COMMENT ON FUNCTION hagen.provider_configured(text) IS
	'True when credentials for the provider (fal, xai, s3) are configured; never reveals them.';

-- A setting of ours, or the fallback when it is unset or empty.
CREATE FUNCTION hagen._setting(name text, fallback text DEFAULT NULL) RETURNS text
	LANGUAGE sql STABLE
	RETURN coalesce(nullif(current_setting(name, true), ''), fallback);

-- A duration setting (a GUC holding an interval-like text, e.g. '20min').
CREATE FUNCTION hagen._setting_interval(name text, fallback interval) RETURNS interval
	LANGUAGE sql STABLE
	RETURN coalesce(hagen._setting(name)::interval, fallback);

-- Percent-encodes text as UTF-8 the way S3 wants it: every byte except the
-- unreserved set A-Z a-z 0-9 - _ . ~ (and '/' when keep_slash).
CREATE FUNCTION hagen._uri_encode(value text, keep_slash boolean DEFAULT true) RETURNS text
	LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'hagen_uri_encode';

-- Parses text as jsonb; NULL when it is not valid JSON (no subtransaction).
CREATE FUNCTION hagen._try_jsonb(value text) RETURNS jsonb
	LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'hagen_try_jsonb';

-- Exponential back-off with jitter: base * 2^(attempt-1), capped, then a
-- random factor in [0.5, 1] so that many retries do not fire together.
CREATE FUNCTION hagen._backoff(attempt integer, base interval DEFAULT '2 seconds',
							   cap interval DEFAULT '5 minutes') RETURNS interval
	LANGUAGE sql VOLATILE
	RETURN least(cap, base * power(2, greatest(attempt - 1, 0))::float8)
		   * (0.5 + random() * 0.5);

-- Appends a line to the job log.  (PL/pgSQL, so that its INSERT is planned
-- once per session: a SQL function's body is parsed and planned at every
-- call.)
CREATE FUNCTION hagen._log(job bigint, project uuid, level text, message text,
						   detail jsonb DEFAULT '{}') RETURNS void
	LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	INSERT INTO hagen.job_log (job_id, project_id, level, message, detail)
	VALUES (job, project, level, message, coalesce(detail, '{}'));
END;
$$;

-- Deletes the log lines of the jobs or projects a statement deleted (what
-- foreign keys with ON DELETE CASCADE did; see hagen.job_log).
CREATE FUNCTION hagen._delete_logs() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp AS $$
BEGIN
	IF TG_TABLE_NAME = 'job' THEN
		DELETE FROM hagen.job_log l USING gone g WHERE l.job_id = g.id;
	ELSE
		DELETE FROM hagen.job_log l USING gone g WHERE l.project_id = g.id;
	END IF;
	RETURN NULL;
END;
$$;
CREATE TRIGGER job_delete_logs AFTER DELETE ON hagen.job
	REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION hagen._delete_logs();
CREATE TRIGGER video_project_delete_logs AFTER DELETE ON hagen.video_project
	REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION hagen._delete_logs();

-- May role `who` use the workspace?  Used by the API (for the session's
-- role) and by the row-level security policies (for the current role).
CREATE FUNCTION hagen._workspace_allowed(workspace text, who name) RETURNS boolean
	LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE
		WHEN NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = who) THEN false
		WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = who) THEN true
		WHEN pg_has_role(who, 'hagen_operator', 'USAGE') THEN true
		ELSE NOT EXISTS (SELECT 1 FROM hagen.workspace_role r JOIN pg_roles g ON g.rolname = r.role_name
						 WHERE pg_has_role(who, g.oid, 'USAGE'))
			 OR EXISTS (SELECT 1 FROM hagen.workspace_role r JOIN pg_roles g ON g.rolname = r.role_name
						WHERE r.workspace_id = workspace AND pg_has_role(who, g.oid, 'USAGE'))
	END;
$$;

-- Refuses a workspace the session's role may not use.
CREATE FUNCTION hagen._check_workspace(workspace text) RETURNS void
	LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF NOT hagen._workspace_allowed(workspace, session_user) THEN
		RAISE EXCEPTION 'permission denied for workspace "%"', workspace
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('Role %s is limited to the workspaces listed for it in hagen.workspace_role.',
								  session_user),
				  HINT = 'Connect as a role of that workspace, or ask an operator to list it.';
	END IF;
END;
$$;

-- Raises a clear error for a project that does not exist (or that the
-- session's role may not use).
CREATE FUNCTION hagen._project(project uuid) RETURNS hagen.video_project
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	p hagen.video_project;
BEGIN
	IF project IS NULL THEN
		RAISE EXCEPTION 'project id must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the uuid returned by hagen.create_project().';
	END IF;
	SELECT * INTO p FROM hagen.video_project WHERE id = project;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'video project % does not exist', project
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with hagen.create_project() first.';
	END IF;
	PERFORM hagen._check_workspace(p.workspace_id);
	RETURN p;
END;
$$;

-- Keeps updated_at current (in C: it runs for every update of a job).
CREATE FUNCTION hagen._touch() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'hagen_touch';
CREATE TRIGGER video_project_touch BEFORE UPDATE ON hagen.video_project
	FOR EACH ROW EXECUTE FUNCTION hagen._touch();
CREATE TRIGGER video_clip_touch BEFORE UPDATE ON hagen.video_clip
	FOR EACH ROW EXECUTE FUNCTION hagen._touch();
CREATE TRIGGER job_touch BEFORE UPDATE ON hagen.job
	FOR EACH ROW EXECUTE FUNCTION hagen._touch();

-- Every change of a project's status or progress is announced on the
-- hagen_video channel, so apps can LISTEN instead of polling.
CREATE FUNCTION hagen._notify_project() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status
	   OR NEW.progress IS DISTINCT FROM OLD.progress THEN
		PERFORM pg_notify('hagen_video', jsonb_build_object(
			'project_id', NEW.id, 'status', NEW.status, 'progress', NEW.progress)::text);
	END IF;
	RETURN NULL;
END;
$$;
CREATE TRIGGER video_project_notify AFTER INSERT ON hagen.video_project
	FOR EACH ROW EXECUTE FUNCTION hagen._notify_project();
CREATE TRIGGER video_project_notify_update AFTER UPDATE ON hagen.video_project
	FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status OR NEW.progress IS DISTINCT FROM OLD.progress)
	EXECUTE FUNCTION hagen._notify_project();

-- A job queued (or due again) wakes, when its transaction commits, the
-- workers of its lane that would otherwise sleep past its due time.
CREATE FUNCTION hagen._wake_trigger() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'hagen_wake_trigger';
CREATE TRIGGER job_wake BEFORE INSERT OR UPDATE OF status, run_at, lane ON hagen.job
	FOR EACH ROW WHEN (NEW.status = 'queued')
	EXECUTE FUNCTION hagen._wake_trigger();
