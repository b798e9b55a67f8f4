-- hagenkit upgrade 0.1 -> 0.2.  Every change to src/sql/ after 0.1 is
-- repeated here, so that ALTER EXTENSION hagenkit UPDATE gives exactly the
-- catalog of a fresh install (test/t/006_upgrade.pl compares them).
\echo Use "ALTER EXTENSION hagenkit UPDATE TO '0.2'" to load this file. \quit

-- pg_dump keeps the user data of the extension's tables (95_dump.sql).
SELECT pg_catalog.pg_extension_config_dump('hagen.music_track', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.video_project', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.video_clip', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.job', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.job_log', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.lease_token_seq', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('hagen.job', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('hagen.job_log', 'id')::regclass, '');

-- A compile error names its segment once, not twice (60_compile.sql).
-- Reads the compile worker's report.  A crash or a failure is retried once,
-- then fails the project with the helper's message (which names the
-- segment it concerns; the number is added when it does not).
CREATE OR REPLACE FUNCTION hagen._compile_interpret(j hagen.job, o jsonb) RETURNS jsonb
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


-- Tenants: roles, SECURITY DEFINER API, row-level security by workspace
-- (00_schema.sql, 10_util.sql, 20_api.sql, 55_storage.sql, 90_privileges.sql).
-- Which roles may use which workspaces, for apps that give each tenant its
-- own role.  A role listed here (or a member of one) may use only the
-- workspaces listed for it; roles not listed, operators and superusers may
-- use every workspace.  Empty by default: one trusted app.
CREATE TABLE hagen.workspace_role (
	workspace_id	text NOT NULL CHECK (workspace_id <> ''),
	role_name		name NOT NULL,
	PRIMARY KEY (workspace_id, role_name)
);

-- May role `who` use the workspace?  Used by the API (for the session's
-- role) and by the row-level security policies (for the current role).
CREATE OR REPLACE FUNCTION hagen._workspace_allowed(workspace text, who name) RETURNS boolean
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
CREATE OR REPLACE FUNCTION hagen._check_workspace(workspace text) RETURNS void
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
CREATE OR REPLACE FUNCTION hagen._project(project uuid) RETURNS hagen.video_project
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

-- Creates a video project and returns its id.
CREATE OR REPLACE FUNCTION hagen.create_project(workspace_id text,
									 aspect_ratio text DEFAULT '16:9',
									 provider text DEFAULT 'fal',
									 generate_native_audio boolean DEFAULT false,
									 music_track_id uuid DEFAULT NULL,
									 music_volume real DEFAULT 0.3,
									 video_volume real DEFAULT 1.0,
									 metadata jsonb DEFAULT '{}')
	RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	new_id uuid;
BEGIN
	IF workspace_id IS NULL OR workspace_id = '' OR workspace_id ~ '[/[:cntrl:]]'
	   OR workspace_id IN ('.', '..') OR length(workspace_id) > 200 THEN
		RAISE EXCEPTION 'invalid workspace id "%"', coalesce(left(workspace_id, 200), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'The workspace id becomes the first segment of every storage key.',
				  HINT = 'Use a non-empty id of at most 200 characters without "/" or control characters.';
	END IF;
	PERFORM hagen._check_workspace(workspace_id);
	PERFORM hagen._check_choice('aspect ratio', aspect_ratio, ARRAY['16:9', '9:16', '1:1']);
	PERFORM hagen._check_choice('provider', provider, ARRAY['fal', 'xai']);
	IF generate_native_audio IS NULL THEN
		RAISE EXCEPTION 'generate_native_audio must not be null'
			USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass true or false.';
	END IF;
	PERFORM hagen._check_volume('music volume', music_volume);
	PERFORM hagen._check_volume('video volume', video_volume);
	IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
		RAISE EXCEPTION 'metadata must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass ''{}'' for none.';
	END IF;
	IF music_track_id IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM hagen.music_track m WHERE m.id = music_track_id) THEN
		RAISE EXCEPTION 'music track % does not exist', music_track_id
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'Create it with hagen.add_music_track() first.';
	END IF;

	INSERT INTO hagen.video_project AS p (workspace_id, aspect_ratio, provider,
			generate_native_audio, music_track_id, music_volume, video_volume, metadata)
	VALUES (create_project.workspace_id, create_project.aspect_ratio, create_project.provider,
			create_project.generate_native_audio, create_project.music_track_id,
			create_project.music_volume, create_project.video_volume, create_project.metadata)
	RETURNING p.id INTO new_id;
	RETURN new_id;
END;
$$;

-- A query-string presigned URL (AWS SigV4) for an object of the bucket:
-- anyone holding it may GET / PUT / HEAD / DELETE that one key until it
-- expires.  at is when the validity starts (now by default).
CREATE OR REPLACE FUNCTION hagen.presign_url(key text, method text DEFAULT 'GET',
								  expires_in interval DEFAULT '1 hour',
								  at timestamptz DEFAULT now())
	RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	seconds numeric := extract(epoch FROM expires_in);
BEGIN
	PERFORM hagen._check_key(key);
	-- Keys start with their workspace: a tenant presigns only its own.
	PERFORM hagen._check_workspace(split_part(key, '/', 1));
	PERFORM hagen._check_choice('method', upper(method), ARRAY['GET', 'PUT', 'HEAD', 'DELETE']);
	IF seconds IS NULL OR seconds < 1 OR seconds > 604800 THEN
		RAISE EXCEPTION 'invalid expiry of % seconds', coalesce(round(seconds, 3)::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A presigned URL lives from 1 second to 7 days.';
	END IF;
	IF at IS NULL THEN
		RAISE EXCEPTION 'at must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN hagen._presign(hagen._s3_url(key), upper(method), floor(seconds)::integer, at);
END;
$$;

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

ALTER FUNCTION hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.add_clip(uuid, text, text, text, text, text, real, text, integer, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.add_music_track(text, text, text, text, real)
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

GRANT EXECUTE ON FUNCTION
	hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb),
	hagen.add_clip(uuid, text, text, text, text, text, real, text, integer, text),
	hagen.add_music_track(text, text, text, text, real),
	hagen.start_video(uuid),
	hagen.cancel_video(uuid),
	hagen.retry_video(uuid),
	hagen.video_status(uuid),
	hagen.get_video_path(text, uuid, text),
	hagen.public_url(text),
	hagen.presign_url(text, text, interval, timestamptz),
	hagen.provider_configured(text),
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

GRANT SELECT ON ALL TABLES IN SCHEMA hagen TO hagen_operator;
GRANT INSERT, UPDATE, DELETE ON hagen.pricing, hagen.room_prompt, hagen.workspace_role TO hagen_operator;
GRANT EXECUTE ON FUNCTION hagen.purge_history(interval) TO hagen_operator;
SELECT pg_catalog.pg_extension_config_dump('hagen.workspace_role', '');

-- Engine hot spots found by bench/load (10_util.sql, 30_engine.sql):
-- _uri_encode in C, next_due without a min() that scanned the queue.
CREATE OR REPLACE FUNCTION hagen._uri_encode(value text, keep_slash boolean DEFAULT true) RETURNS text
	LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'hagen_uri_encode';
CREATE OR REPLACE FUNCTION hagen.next_due(lane text) RETURNS bigint
	LANGUAGE sql STABLE AS $$
	-- ORDER BY ... LIMIT 1, not min(): the planner's min() scanned every
	-- queued job of the lane (milliseconds per call under load).
	SELECT CASE WHEN t IS NOT NULL
				THEN greatest(0, ceil(extract(epoch FROM (t - now())) * 1000))::bigint END
	FROM (SELECT least(
			(SELECT run_at FROM hagen.job
			 WHERE status = 'queued' AND job.lane = next_due.lane ORDER BY run_at LIMIT 1),
			(SELECT lease_expires_at FROM hagen.job
			 WHERE status = 'running' AND job.lane = next_due.lane
			 ORDER BY lease_expires_at LIMIT 1)) AS t) AS due;
$$;
