-- hagenkit install script, part 90: roles and privileges.
--
-- Three roles, for the DBA to grant:
--   hagen_user      apps: the public API (create, start, cancel, retry,
--                   status, URLs) and reading their own projects and clips
--   hagen_operator  operators: also every table and view, history purges,
--                   models and prices, room prompts, the workspace/role map
--                   and workspace budgets
--   hagen_worker    remote compile workers: the compile lane's protocol
--                   (created with its functions in 62_remote.sql)
-- The API functions run as the extension's owner (SECURITY DEFINER) with a
-- fixed search_path, so callers need no table privileges.  Internal tables
-- and the in-server workers' protocol are granted to no one.  Projects and clips have
-- row-level security by workspace (hagen.workspace_role): a tenant role
-- sees and touches only its own workspaces.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hagen_user') THEN
		CREATE ROLE hagen_user NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hagen_operator') THEN
		CREATE ROLE hagen_operator NOLOGIN;
	END IF;
	IF NOT pg_has_role('hagen_operator', 'hagen_user', 'MEMBER') THEN
		GRANT hagen_user TO hagen_operator;
	END IF;
END;
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA hagen FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA hagen FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA hagen FROM PUBLIC;
REVOKE ALL ON SCHEMA hagen FROM PUBLIC;
GRANT USAGE ON SCHEMA hagen TO hagen_user;
-- Remote compile workers: the schema, to reach their five functions (62_remote.sql).
GRANT USAGE ON SCHEMA hagen TO hagen_worker;

ALTER FUNCTION hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real, text, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.update_project(uuid, text, text, boolean, uuid, real, real, jsonb, real, text, text, boolean)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.remove_clip(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.move_clip(uuid, integer) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.delete_project(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.list_projects(text, integer, timestamptz)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.workspace_budget_status(text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.add_clip(uuid, text, text, text, text, text, real, text, integer, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.add_music_track(text, text, text, text, real, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.start_video(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.cancel_video(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.retry_video(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.video_status(uuid) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.presign_url(text, text, interval, timestamptz)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.public_url(text) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.provider_configured(text) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.purge_history(interval) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.sweep_work_dir() SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.delete_project_objects(uuid, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;

GRANT EXECUTE ON FUNCTION
	hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real, text, text),
	hagen.update_project(uuid, text, text, boolean, uuid, real, real, jsonb, real, text, text, boolean),
	hagen.remove_clip(uuid),
	hagen.move_clip(uuid, integer),
	hagen.delete_project(uuid),
	hagen.list_projects(text, integer, timestamptz),
	hagen.workspace_budget_status(text),
	hagen.add_clip(uuid, text, text, text, text, text, real, text, integer, text),
	hagen.add_music_track(text, text, text, text, real, text),
	hagen.start_video(uuid),
	hagen.cancel_video(uuid),
	hagen.retry_video(uuid),
	hagen.video_status(uuid),
	hagen.get_video_path(text, uuid, text),
	hagen.public_url(text),
	hagen.presign_url(text, text, interval, timestamptz),
	hagen.provider_configured(text),
	hagen.delete_project_objects(uuid, text),
	hagen._workspace_allowed(text, name)
TO hagen_user;

-- Apps may read their projects and clips directly, row by row.
GRANT SELECT ON hagen.video_project, hagen.video_clip, hagen.music_track TO hagen_user;
ALTER TABLE hagen.video_project ENABLE ROW LEVEL SECURITY;
ALTER TABLE hagen.video_clip ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_rows ON hagen.video_project
	USING (hagen._workspace_allowed(workspace_id, current_user));
CREATE POLICY workspace_rows ON hagen.video_clip
	USING (EXISTS (SELECT 1 FROM hagen.video_project p WHERE p.id = project_id));
-- Music: the shared tracks and those of the workspaces the role may use.
ALTER TABLE hagen.music_track ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_rows ON hagen.music_track
	USING (workspace_id IS NULL OR hagen._workspace_allowed(workspace_id, current_user));

GRANT SELECT ON ALL TABLES IN SCHEMA hagen TO hagen_operator;
GRANT INSERT, UPDATE, DELETE ON hagen.video_model, hagen.room_prompt, hagen.workspace_role,
	hagen.workspace_budget TO hagen_operator;
GRANT EXECUTE ON FUNCTION hagen.purge_history(interval) TO hagen_operator;
GRANT EXECUTE ON FUNCTION hagen.sweep_work_dir() TO hagen_operator;
