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

-- Storage: multipart uploads, S3 errors, the purge of a project's objects
-- (56_s3_answers.sql, 57_upload.sql, 58_purge.sql and the engine's hooks).
-- Jobs of two more kinds: the parts of a multipart upload (with their
-- upload's job as parent) and purges, which belong to no project.
ALTER TABLE hagen.job ALTER COLUMN project_id DROP NOT NULL;
ALTER TABLE hagen.job DROP CONSTRAINT job_kind_check,
	ADD CONSTRAINT job_kind_check CHECK (kind IN ('clip', 'transition', 'compile', 'cancel',
												  'upload_part', 'purge'));
ALTER TABLE hagen.job ADD COLUMN parent_id bigint REFERENCES hagen.job (id) ON DELETE CASCADE;
ALTER TABLE hagen.job ADD CONSTRAINT job_project_check CHECK (project_id IS NOT NULL OR kind = 'purge');
-- One job per part of a multipart upload; one live purge per prefix.
CREATE UNIQUE INDEX job_upload_part ON hagen.job (parent_id, ((state ->> 'part')::integer))
	WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX job_one_live_purge ON hagen.job ((state ->> 'prefix'))
	WHERE kind = 'purge' AND status IN ('queued', 'running');

-- The S3 (path-style) URL of the bucket.
CREATE OR REPLACE FUNCTION hagen._s3_bucket_url() RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	endpoint text := rtrim(hagen._setting('hagen.s3_endpoint'), '/');
	bucket text := hagen._setting('hagen.s3_bucket');
BEGIN
	IF endpoint IS NULL OR bucket IS NULL THEN
		RAISE EXCEPTION 'storage is not configured'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('hagen.s3_endpoint is %s and hagen.s3_bucket is %s.',
								  coalesce(endpoint, 'unset'), coalesce(bucket, 'unset')),
				  HINT = 'Set hagen.s3_endpoint (or R2_ACCOUNT_ID) and hagen.s3_bucket (or R2_BUCKET_NAME).';
	END IF;
	RETURN endpoint || '/' || hagen._uri_encode(bucket, false);
END;
$$;

-- The S3 (path-style) URL of a storage key.
CREATE OR REPLACE FUNCTION hagen._s3_url(key text) RETURNS text
	LANGUAGE sql STABLE
	RETURN hagen._s3_bucket_url() || '/' || hagen._uri_encode(key, true);

-- Decodes XML character references (&amp; &lt; &gt; &quot; &apos; &#N; &#xH;)
-- left to right, so "&amp;lt;" stays "&lt;".
CREATE OR REPLACE FUNCTION hagen._xml_unescape(value text) RETURNS text
	LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
	done text := '';
	rest text := value;
	at integer;
	ent text;
	code bigint;
BEGIN
	LOOP
		at := position('&' IN rest);
		EXIT WHEN at = 0;
		done := done || left(rest, at - 1);
		rest := substr(rest, at);
		ent := substring(rest FROM '^&(#x[0-9A-Fa-f]{1,6}|#[0-9]{1,7}|amp|lt|gt|quot|apos);');
		IF ent IS NULL THEN
			done := done || '&';
			rest := substr(rest, 2);
			CONTINUE;
		END IF;
		IF ent LIKE '#x%' THEN
			code := ('x' || lpad(substr(ent, 3), 8, '0'))::bit(32)::bigint;
		ELSIF ent LIKE '#%' THEN
			code := substr(ent, 2)::bigint;
		END IF;
		done := done || CASE ent WHEN 'amp' THEN '&' WHEN 'lt' THEN '<' WHEN 'gt' THEN '>'
								 WHEN 'quot' THEN '"' WHEN 'apos' THEN ''''
								 ELSE CASE WHEN code BETWEEN 1 AND 1114111 AND code NOT BETWEEN 55296 AND 57343
										   THEN chr(code::integer) ELSE '?' END END;
		rest := substr(rest, length(ent) + 3);
	END LOOP;
	RETURN done || rest;
END;
$$;

-- Text made safe for an XML element.
CREATE OR REPLACE FUNCTION hagen._xml_escape(value text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	RETURN replace(replace(replace(replace(replace(value, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
						   '"', '&quot;'), '''', '&apos;');

-- The values of every <tag>value</tag> of an XML text, in document order
-- (an empty array when there is none).
CREATE OR REPLACE FUNCTION hagen._xml_values(body text, tag text) RETURNS text[]
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (
		SELECT coalesce(array_agg(hagen._xml_unescape(m[1]) ORDER BY n), '{}')
		FROM regexp_matches(coalesce(body, ''), '<' || tag || '>([^<]*)</' || tag || '>', 'g')
			 WITH ORDINALITY AS x(m, n)
	);

-- The value of the first <tag> of an XML text, or NULL.
CREATE OR REPLACE FUNCTION hagen._xml_value(body text, tag text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (hagen._xml_values(body, tag))[1];

-- "Code: Message" of an S3 error answer (<Error><Code>…</Code><Message>…),
-- or NULL when the answer is not one.
CREATE OR REPLACE FUNCTION hagen._s3_error(o jsonb) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN o ->> 'body_text' ~ '<Error>' THEN
		nullif(concat_ws(': ', hagen._xml_value(o ->> 'body_text', 'Code'),
						 hagen._xml_value(o ->> 'body_text', 'Message')), '') END;

-- The decision for an S3 request that did not succeed: transport errors,
-- 429, 5xx and the codes S3 asks clients to retry (SlowDown, InternalError,
-- RequestTimeout…) are retried with back-off (at least Retry-After); any
-- other answer is final.  The error names what was being done, the HTTP
-- status and S3's own Code and Message.
CREATE OR REPLACE FUNCTION hagen._s3_failure(o jsonb, what text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	code text := hagen._xml_value(o ->> 'body_text', 'Code');
	ra text := o -> 'headers' ->> 'retry-after';
	err text;
BEGIN
	err := format('%s failed: %s', what,
		CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
			 ELSE format('HTTP %s%s', status, coalesce(': ' || left(hagen._s3_error(o), 400), '')) END);
	IF status = 0 OR status = 429 OR status >= 500
	   OR code IN ('SlowDown', 'InternalError', 'ServiceUnavailable', 'RequestTimeout',
				   'RequestTimeTooSkewed', 'OperationAborted') THEN
		RETURN jsonb_strip_nulls(jsonb_build_object('action', 'retry', 'error', err,
			'retry_after_ms', CASE WHEN ra ~ '^\s*\d+(\.\d+)?\s*$' THEN (ra::numeric * 1000)::bigint END));
	END IF;
	RETURN jsonb_build_object('action', 'fail', 'error', err);
END;
$$;

CREATE OR REPLACE FUNCTION hagen._multipart_threshold() RETURNS bigint
	LANGUAGE sql STABLE
	RETURN pg_size_bytes(hagen._setting('hagen.s3_multipart_threshold', '64MB'));

-- How often a parent waiting for its parts looks at them on its own (its
-- parts wake it when they end; this only covers a wake-up that was lost).
CREATE OR REPLACE FUNCTION hagen._upload_watchdog_ms() RETURNS integer
	LANGUAGE sql IMMUTABLE RETURN 30000;

-- The parts of a multipart upload of size bytes: equal parts of
-- hagen.s3_part_size (or part_size), the last one no larger; parts are at
-- least 5 MiB and at most 5 GiB - 5 MiB (R2's limit), at most 10,000 of them,
-- so a file that would need more gets larger parts (in whole MiB).  The
-- largest object is 5 TiB - 5 GiB (R2's limit).
CREATE OR REPLACE FUNCTION hagen._multipart_plan(size bigint, part_size bigint DEFAULT NULL,
									  OUT part_bytes bigint, OUT part_count integer,
									  OUT last_part_bytes bigint)
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	mib constant bigint := 1048576;
	min_part constant bigint := 5 * 1048576;
	max_part constant bigint := 5 * 1073741824::bigint - 5 * 1048576;
	max_parts constant integer := 10000;
	max_object constant bigint := 5 * 1099511627776::bigint - 5 * 1073741824::bigint;
BEGIN
	IF size IS NULL OR size < 1 THEN
		RAISE EXCEPTION 'invalid upload size %', coalesce(size::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A multipart upload needs the size of the file in bytes, at least 1.';
	END IF;
	IF size > max_object THEN
		RAISE EXCEPTION 'a file of % bytes is too large to store', size
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('The largest object is %s bytes (5 TiB - 5 GiB).', max_object);
	END IF;
	part_bytes := least(greatest(coalesce(part_size,
										  pg_size_bytes(hagen._setting('hagen.s3_part_size', '16MB'))),
								 min_part), max_part);
	IF (size + part_bytes - 1) / part_bytes > max_parts THEN
		part_bytes := ((size + max_parts - 1) / max_parts + mib - 1) / mib * mib;
	END IF;
	part_count := ((size + part_bytes - 1) / part_bytes)::integer;
	last_part_bytes := size - (part_count - 1) * part_bytes;
END;
$$;

-- Whether a file of this size is stored with one PUT or a multipart upload.
CREATE OR REPLACE FUNCTION hagen._store_step(bytes bigint) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN bytes >= hagen._multipart_threshold() THEN 'upload_create' ELSE 'store' END;

-- The query string naming a multipart upload.
CREATE OR REPLACE FUNCTION hagen._upload_query(upload_id text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT
	RETURN 'uploadId=' || hagen._uri_encode(upload_id, false);

-- The body of CompleteMultipartUpload: every part's number and ETag, in order.
CREATE OR REPLACE FUNCTION hagen._complete_xml(parts jsonb, part_count integer) RETURNS text
	LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	missing integer;
BEGIN
	SELECT min(n) INTO missing FROM generate_series(1, part_count) n WHERE NOT parts ? n::text;
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'part % of % has no ETag', missing, part_count;
	END IF;
	RETURN '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
		|| (SELECT string_agg(format('<Part><PartNumber>%s</PartNumber><ETag>%s</ETag></Part>',
									 n, hagen._xml_escape(parts ->> n::text)), '' ORDER BY n)
			FROM generate_series(1, part_count) n)
		|| '</CompleteMultipartUpload>';
END;
$$;

-- The effect of a storing step of a job.
CREATE OR REPLACE FUNCTION hagen._upload_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	url text := hagen._s3_url(j.state ->> 'key');
	ctype text := coalesce(j.state ->> 'content_type', 'video/mp4');
BEGIN
	CASE j.step
	WHEN 'store' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'PUT', 'url', url, 'auth', 's3',
			'headers', jsonb_build_object('content-type', ctype),
			'body_file', j.state ->> 'file', 'timeout_ms', 600000);
	WHEN 'upload_create' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'POST', 'url', url || '?uploads',
			'auth', 's3', 'headers', jsonb_build_object('content-type', ctype), 'timeout_ms', 60000);
	WHEN 'upload_parts' THEN
		RETURN '{"type": "noop", "reason": "waiting for the parts of a multipart upload"}';
	WHEN 'upload_complete' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'POST', 'auth', 's3',
			'url', url || '?' || hagen._upload_query(j.state ->> 'upload_id'),
			'headers', '{"content-type": "application/xml"}'::jsonb,
			'body_text', hagen._complete_xml(j.state -> 'parts', (j.state ->> 'part_count')::integer),
			'timeout_ms', 600000);
	WHEN 'upload_check' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'HEAD', 'url', url, 'auth', 's3',
			'timeout_ms', 60000);
	END CASE;
	RAISE EXCEPTION 'unknown storing step "%"', j.step;
END;
$$;

-- Reads the outcome of a storing step.  Returns the job's next decision, or
-- {"action": "stored"} (with "log" and "state" to keep) once the object is
-- in the bucket: the job's own adapter says what that means for it.
CREATE OR REPLACE FUNCTION hagen._upload_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	key text := j.state ->> 'key';
	uid text;
	plan record;
BEGIN
	CASE j.step
	WHEN 'store' THEN
		IF status BETWEEN 200 AND 299 THEN
			RETURN '{"action": "stored"}';
		END IF;
		RETURN hagen._s3_failure(o, format('upload of %s to storage', key));
	WHEN 'upload_create' THEN
		IF status BETWEEN 200 AND 299 THEN
			uid := hagen._xml_value(o ->> 'body_text', 'UploadId');
			IF coalesce(uid, '') = '' THEN
				RETURN jsonb_build_object('action', 'fail', 'error',
					format('start of the multipart upload of %s failed: the answer names no UploadId', key));
			END IF;
			plan := hagen._multipart_plan((j.state ->> 'bytes')::bigint);
			RETURN jsonb_build_object('action', 'advance', 'step', 'upload_parts',
				'schedule_parts', true, 'delay_ms', hagen._upload_watchdog_ms(),
				'log', format('multipart upload of %s started: %s parts of %s bytes', key,
							  plan.part_count, plan.part_bytes),
				'state', jsonb_build_object('upload_id', uid, 'part_bytes', plan.part_bytes,
											'part_count', plan.part_count, 'parts', '{}'::jsonb,
											'next_part', 1));
		END IF;
		RETURN hagen._s3_failure(o, format('start of the multipart upload of %s', key));
	WHEN 'upload_parts' THEN
		RETURN hagen._upload_parts_check(j);
	WHEN 'upload_complete' THEN
		IF status BETWEEN 200 AND 299 AND o ->> 'body_text' !~ '<Error>' THEN
			RETURN jsonb_build_object('action', 'stored', 'state', '{"upload_done": true}'::jsonb,
				'log', format('multipart upload of %s completed (%s parts)', key, j.state ->> 'part_count'));
		ELSIF hagen._xml_value(o ->> 'body_text', 'Code') = 'NoSuchUpload' THEN
			-- Completed by an earlier try whose answer was lost, or gone: look.
			RETURN jsonb_build_object('action', 'advance', 'step', 'upload_check',
				'log', 'the multipart upload is no longer known; checking whether the object is stored');
		END IF;
		RETURN hagen._s3_failure(o, format('completion of the multipart upload of %s', key));
	WHEN 'upload_check' THEN
		IF status BETWEEN 200 AND 299
		   AND o -> 'headers' ->> 'content-length' = j.state ->> 'bytes' THEN
			RETURN jsonb_build_object('action', 'stored', 'state', '{"upload_done": true}'::jsonb,
				'log', format('%s is stored (%s bytes)', key, j.state ->> 'bytes'));
		ELSIF status BETWEEN 200 AND 299 OR status = 404 THEN
			RETURN jsonb_build_object('action', 'fail', 'error',
				format('the multipart upload of %s was lost before it completed (the bucket answers HTTP %s%s)',
					   key, status, coalesce(' with ' || (o -> 'headers' ->> 'content-length') || ' bytes', '')));
		END IF;
		RETURN hagen._s3_failure(o, format('check of %s in storage', key));
	END CASE;
	RAISE EXCEPTION 'unknown storing step "%"', j.step;
END;
$$;

-- Queues parts of a parent's multipart upload until as many are live as
-- hagen.s3_upload_concurrency allows.  Returns how many were queued.
CREATE OR REPLACE FUNCTION hagen._upload_schedule(parent bigint) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.job;
	live integer;
	n integer := 0;
	nxt integer;
	part_count integer;
	part_bytes bigint;
	size bigint;
	allowed integer := hagen._setting('hagen.s3_upload_concurrency', '8')::integer;
BEGIN
	SELECT * INTO p FROM hagen.job WHERE id = parent FOR UPDATE;
	IF NOT FOUND OR p.step <> 'upload_parts' OR p.status NOT IN ('queued', 'running') THEN
		RETURN 0;
	END IF;
	SELECT count(*) INTO live FROM hagen.job q
	WHERE q.parent_id = p.id AND q.kind = 'upload_part' AND q.status IN ('queued', 'running');
	nxt := coalesce((p.state ->> 'next_part')::integer, 1);
	part_count := (p.state ->> 'part_count')::integer;
	part_bytes := (p.state ->> 'part_bytes')::bigint;
	size := (p.state ->> 'bytes')::bigint;
	WHILE live < allowed AND nxt <= part_count LOOP
		IF NOT p.state -> 'parts' ? nxt::text THEN
			INSERT INTO hagen.job (project_id, clip_id, kind, lane, provider, step, state,
								   deadline_at, parent_id)
			VALUES (p.project_id, p.clip_id, 'upload_part', 'http', 's3', 'part',
					jsonb_build_object('part', nxt, 'offset', (nxt - 1) * part_bytes,
									   'length', least(part_bytes, size - (nxt - 1) * part_bytes),
									   'upload_id', p.state ->> 'upload_id',
									   'key', p.state ->> 'key', 'file', p.state ->> 'file'),
					p.deadline_at, p.id)
			ON CONFLICT DO NOTHING;
			live := live + 1;
			n := n + 1;
		END IF;
		nxt := nxt + 1;
	END LOOP;
	UPDATE hagen.job SET state = state || jsonb_build_object('next_part', nxt) WHERE id = p.id;
	RETURN n;
END;
$$;

-- A parent waiting for its parts, looked at: all parts stored -> complete;
-- a part failed -> the upload fails; otherwise wait on (queuing parts that
-- should be running).
CREATE OR REPLACE FUNCTION hagen._upload_parts_check(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	part_count integer := (j.state ->> 'part_count')::integer;
	bad hagen.job;
BEGIN
	IF (SELECT count(*) FROM jsonb_object_keys(j.state -> 'parts')) >= part_count THEN
		RETURN jsonb_build_object('action', 'advance', 'step', 'upload_complete');
	END IF;
	SELECT * INTO bad FROM hagen.job q
	WHERE q.parent_id = j.id AND q.kind = 'upload_part' AND q.status IN ('failed', 'canceled')
	  AND q.state ->> 'upload_id' = j.state ->> 'upload_id'
	ORDER BY q.id LIMIT 1;
	IF FOUND THEN
		RETURN jsonb_build_object('action', 'fail', 'error',
			format('part %s of %s of the multipart upload of %s %s: %s', bad.state ->> 'part', part_count,
				   j.state ->> 'key', bad.status, coalesce(bad.last_error, 'no reason given')));
	END IF;
	RETURN jsonb_build_object('action', 'advance', 'step', 'upload_parts', 'schedule_parts', true,
							  'delay_ms', hagen._upload_watchdog_ms());
END;
$$;

-- The effect of a part: its byte range of the file, streamed.
CREATE OR REPLACE FUNCTION hagen._upload_part_effect(j hagen.job) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN jsonb_build_object('type', 'http', 'method', 'PUT', 'auth', 's3',
		'url', hagen._s3_url(j.state ->> 'key') || '?partNumber=' || (j.state ->> 'part')
			   || '&' || hagen._upload_query(j.state ->> 'upload_id'),
		'body_file', j.state ->> 'file', 'body_offset', (j.state -> 'offset'),
		'body_length', (j.state -> 'length'),
		'timeout_ms', 120000 + (j.state ->> 'length')::bigint / 100);

-- Reads the answer to a part: its ETag is what completion needs.  R2 is
-- known to refuse a part's signature now and then under load: a 403 is
-- tried once more.
CREATE OR REPLACE FUNCTION hagen._upload_part_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	etag text := o -> 'headers' ->> 'etag';
	what text := format('upload of part %s of %s', j.state ->> 'part', j.state ->> 'key');
BEGIN
	IF status BETWEEN 200 AND 299 THEN
		IF coalesce(etag, '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error', what || ' failed: the answer has no ETag');
		END IF;
		RETURN jsonb_build_object('action', 'succeed', 'state', jsonb_build_object('etag', etag));
	ELSIF status = 403 AND j.attempts < 2 THEN
		RETURN jsonb_build_object('action', 'retry', 'max_attempts', 2,
			'error', (hagen._s3_failure(o, what)) ->> 'error');
	END IF;
	RETURN hagen._s3_failure(o, what);
END;
$$;

-- A part ended: a stored part's ETag goes into its parent's state (with
-- the next part queued, or the parent woken to complete); a failed part
-- wakes the parent, which fails the upload.
CREATE OR REPLACE FUNCTION hagen._upload_part_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.job;
BEGIN
	SELECT * INTO p FROM hagen.job WHERE id = j.parent_id FOR UPDATE;
	IF NOT FOUND OR p.step <> 'upload_parts' OR p.status NOT IN ('queued', 'running')
	   OR p.state ->> 'upload_id' IS DISTINCT FROM j.state ->> 'upload_id' THEN
		RETURN;
	END IF;
	IF j.status = 'succeeded' THEN
		p.state := jsonb_set(p.state, ARRAY['parts', j.state ->> 'part'], j.state -> 'etag');
		UPDATE hagen.job SET state = p.state WHERE id = p.id;
		IF (SELECT count(*) FROM jsonb_object_keys(p.state -> 'parts'))
		   < (p.state ->> 'part_count')::integer THEN
			PERFORM hagen._upload_schedule(p.id);
			PERFORM hagen._advance_project(p.project_id);
			RETURN;
		END IF;
	END IF;
	UPDATE hagen.job SET run_at = now() WHERE id = p.id AND status = 'queued';
END;
$$;

-- A job with a multipart upload under way ended without completing it:
-- its parts stop and the upload is aborted, so storage keeps no parts.
CREATE OR REPLACE FUNCTION hagen._upload_abandon(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	q hagen.job;
BEGIN
	FOR q IN SELECT * FROM hagen.job x WHERE x.parent_id = j.id AND x.kind = 'upload_part'
			 AND x.status = 'queued' ORDER BY x.id FOR UPDATE
	LOOP
		PERFORM hagen._cancel_job(q);
	END LOOP;
	UPDATE hagen.job x SET cancel_requested = true
	WHERE x.parent_id = j.id AND x.kind = 'upload_part' AND x.status = 'running';
	PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', 's3', 'cancel',
		jsonb_build_object('upload_id', j.state ->> 'upload_id', 'key', j.state ->> 'key',
						   'for_job', j.id));
END;
$$;

-- The abort of a multipart upload (a cancel job of provider "s3").
CREATE OR REPLACE FUNCTION hagen._upload_abort_effect(key text, upload_id text) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN jsonb_build_object('type', 'http', 'method', 'DELETE', 'auth', 's3',
		'url', hagen._s3_url(key) || '?' || hagen._upload_query(upload_id), 'timeout_ms', 60000);

-- The body of a DeleteObjects request for some keys (at most 1000).
CREATE OR REPLACE FUNCTION hagen._delete_xml(keys jsonb) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN '<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
		|| coalesce((SELECT string_agg('<Object><Key>' || hagen._xml_escape(k) || '</Key></Object>', ''
									   ORDER BY n)
					 FROM jsonb_array_elements_text(keys) WITH ORDINALITY AS x(k, n)), '')
		|| '</Delete>';

-- Queues the deletion of everything under a project's prefix; aborts lists
-- multipart uploads to abort first ({key, upload_id}), and the job starts at
-- after (when requests of the project may still be in flight).  Returns the
-- job's id (that of the purge already queued for that prefix, if any).
CREATE OR REPLACE FUNCTION hagen._schedule_purge(workspace text, project uuid, aborts jsonb DEFAULT '[]',
									  after timestamptz DEFAULT now())
	RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	prefix text := left(hagen.get_video_path(workspace, project, 'x'), -1);
	new_id bigint;
BEGIN
	INSERT INTO hagen.job (project_id, kind, lane, provider, step, state, run_at)
	VALUES (NULL, 'purge', 'http', 's3',
			CASE WHEN jsonb_array_length(coalesce(aborts, '[]')) > 0 THEN 'abort' ELSE 'list' END,
			jsonb_build_object('prefix', prefix, 'project_id', project, 'workspace_id', workspace,
							   'aborts', coalesce(aborts, '[]'), 'keys', '[]'::jsonb,
							   'deleted', 0, 'failed', 0, 'pages', 0),
			greatest(now(), coalesce(after, now())))
	ON CONFLICT DO NOTHING
	RETURNING id INTO new_id;
	IF new_id IS NULL THEN
		SELECT id INTO new_id FROM hagen.job
		WHERE kind = 'purge' AND status IN ('queued', 'running') AND state ->> 'prefix' = prefix;
	ELSE
		PERFORM hagen._log(new_id, NULL, 'info', format('purge of %s queued', prefix),
						   jsonb_build_object('project_id', project));
	END IF;
	RETURN new_id;
END;
$$;

-- Deletes every stored object of a project (its clips, transitions, final
-- video, thumbnail: all under {workspace_id}/videos/{project_id}/), in the
-- background; returns the id of the job doing it.  The project's rows stay.
-- For a project already deleted, give its workspace id.
CREATE OR REPLACE FUNCTION hagen.delete_project_objects(project_id uuid, workspace_id text DEFAULT NULL)
	RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
BEGIN
	IF project_id IS NULL THEN
		RAISE EXCEPTION 'project id must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the uuid returned by hagen.create_project().';
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.video_project v WHERE v.id = delete_project_objects.project_id) THEN
		p := hagen._project(delete_project_objects.project_id);	-- checks the caller's workspaces
		IF workspace_id IS NOT NULL AND workspace_id <> p.workspace_id THEN
			RAISE EXCEPTION 'video project % belongs to workspace "%", not "%"', p.id,
							p.workspace_id, workspace_id
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Leave workspace_id out for a project that exists.';
		ELSIF p.status IN ('generating', 'compiling') THEN
			RAISE EXCEPTION 'video project % is %', p.id, p.status
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Cancel it with hagen.cancel_video() first.';
		END IF;
		workspace_id := p.workspace_id;
	ELSIF workspace_id IS NULL THEN
		RAISE EXCEPTION 'video project % does not exist', delete_project_objects.project_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'To delete the objects of a project that was deleted, give its workspace id too.';
	ELSE
		PERFORM hagen._check_workspace(workspace_id);
	END IF;
	PERFORM hagen._s3_bucket_url();
	RETURN hagen._schedule_purge(workspace_id, delete_project_objects.project_id);
END;
$$;

-- Deleting a project that was ever started deletes its objects: the
-- multipart uploads it left open are aborted, and the purge waits until no
-- request of the project can still be in flight (the longest lease).
CREATE OR REPLACE FUNCTION hagen._project_deleted() RETURNS trigger
	LANGUAGE plpgsql AS $$
DECLARE
	aborts jsonb;
	after timestamptz;
BEGIN
	IF OLD.started_at IS NULL THEN
		RETURN OLD;
	END IF;
	SELECT coalesce(jsonb_agg(jsonb_build_object('key', j.state ->> 'key',
												 'upload_id', j.state ->> 'upload_id') ORDER BY j.id)
					FILTER (WHERE j.kind <> 'upload_part' AND j.state ? 'upload_id'
							AND NOT j.state ? 'upload_done'), '[]'),
		   max(j.lease_expires_at) FILTER (WHERE j.status = 'running')
	INTO aborts, after
	FROM hagen.job j
	WHERE j.project_id = OLD.id AND j.status IN ('queued', 'running');
	PERFORM hagen._schedule_purge(OLD.workspace_id, OLD.id, aborts,
								  CASE WHEN after IS NOT NULL THEN least(after, now() + interval '1 hour') END);
	RETURN OLD;
END;
$$;

CREATE TRIGGER video_project_purge BEFORE DELETE ON hagen.video_project
	FOR EACH ROW EXECUTE FUNCTION hagen._project_deleted();

-- The effect of the current step of a purge job.
CREATE OR REPLACE FUNCTION hagen._purge_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	body text;
BEGIN
	CASE j.step
	WHEN 'abort' THEN
		RETURN hagen._upload_abort_effect(j.state -> 'aborts' -> 0 ->> 'key',
										  j.state -> 'aborts' -> 0 ->> 'upload_id');
	WHEN 'list' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'GET', 'auth', 's3', 'timeout_ms', 60000,
			'url', hagen._s3_bucket_url() || '?list-type=2&max-keys=1000&prefix='
				   || hagen._uri_encode(j.state ->> 'prefix', false)
				   || coalesce('&continuation-token=' || hagen._uri_encode(j.state ->> 'token', false), ''));
	WHEN 'delete' THEN
		body := hagen._delete_xml(j.state -> 'keys');
		RETURN jsonb_build_object('type', 'http', 'method', 'POST', 'auth', 's3', 'timeout_ms', 120000,
			'url', hagen._s3_bucket_url() || '?delete',
			'headers', jsonb_build_object('content-type', 'application/xml',
				'content-md5', encode(decode(md5(convert_to(body, 'UTF8')), 'hex'), 'base64')),
			'body_text', body);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a purge job', j.step;
END;
$$;

-- Reads the outcome of a purge step and moves on: abort the next upload,
-- list the next page, delete it; done when a page is the last one.
CREATE OR REPLACE FUNCTION hagen._purge_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	body text := o ->> 'body_text';
	prefix text := j.state ->> 'prefix';
	keys text[];
	more boolean;
	errors text[];
	failed integer;
	deleted integer;
	rest jsonb;
BEGIN
	IF status NOT BETWEEN 200 AND 299 THEN
		IF j.step = 'abort' AND (status IN (404, 405, 501) OR status BETWEEN 200 AND 299) THEN
			NULL;	-- gone already, or a server without AbortMultipartUpload: move on
		ELSE
			RETURN hagen._s3_failure(o, CASE j.step
				WHEN 'abort' THEN format('abort of the multipart upload of %s', j.state -> 'aborts' -> 0 ->> 'key')
				WHEN 'list' THEN format('listing of %s', prefix)
				ELSE format('deletion of %s objects under %s', jsonb_array_length(j.state -> 'keys'), prefix) END);
		END IF;
	END IF;
	CASE j.step
	WHEN 'abort' THEN
		rest := (j.state -> 'aborts') - 0;
		RETURN jsonb_build_object('action', 'advance',
			'step', CASE WHEN jsonb_array_length(rest) > 0 THEN 'abort' ELSE 'list' END,
			'state', jsonb_build_object('aborts', rest),
			'log', format('multipart upload of %s aborted (HTTP %s)',
						  j.state -> 'aborts' -> 0 ->> 'key', status));
	WHEN 'list' THEN
		keys := hagen._xml_values(body, 'Key');
		more := hagen._xml_value(body, 'IsTruncated') = 'true';
		IF more AND coalesce(hagen._xml_value(body, 'NextContinuationToken'), '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error',
				format('listing of %s failed: a truncated page without NextContinuationToken', prefix));
		END IF;
		IF cardinality(keys) > 0 THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'delete',
				'state', jsonb_build_object('keys', to_jsonb(keys), 'more', more,
					'token', CASE WHEN more THEN hagen._xml_value(body, 'NextContinuationToken') END,
					'pages', (j.state ->> 'pages')::integer + 1));
		ELSIF more THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'list',
				'state', jsonb_build_object('token', hagen._xml_value(body, 'NextContinuationToken'),
											'pages', (j.state ->> 'pages')::integer + 1));
		END IF;
		RETURN hagen._purge_done(j);
	WHEN 'delete' THEN
		-- Quiet mode: the answer lists only the keys that were not deleted.
		SELECT coalesce(array_agg(format('%s (%s)', hagen._xml_value(e[1], 'Key'),
										 concat_ws(': ', hagen._xml_value(e[1], 'Code'),
												   hagen._xml_value(e[1], 'Message'))) ORDER BY n), '{}')
		INTO errors
		FROM regexp_matches(coalesce(body, ''), '<Error>(.*?)</Error>', 'g') WITH ORDINALITY AS x(e, n);
		failed := (j.state ->> 'failed')::integer + cardinality(errors);
		deleted := (j.state ->> 'deleted')::integer + jsonb_array_length(j.state -> 'keys') - cardinality(errors);
		j.state := j.state || jsonb_build_object('keys', '[]'::jsonb, 'failed', failed, 'deleted', deleted,
			'first_error', coalesce(j.state ->> 'first_error', errors[1]));
		IF (j.state ->> 'more')::boolean THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'list', 'state', j.state);
		END IF;
		RETURN hagen._purge_done(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a purge job', j.step;
END;
$$;

-- The end of a purge: success, or the keys S3 would not delete.
CREATE OR REPLACE FUNCTION hagen._purge_done(j hagen.job) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN (j.state ->> 'failed')::integer > 0 THEN
		jsonb_build_object('action', 'fail', 'state', j.state,
			'error', format('%s of %s objects under %s could not be deleted, e.g. %s',
							j.state ->> 'failed',
							(j.state ->> 'failed')::integer + (j.state ->> 'deleted')::integer,
							j.state ->> 'prefix', j.state ->> 'first_error'))
	ELSE
		jsonb_build_object('action', 'succeed', 'state', j.state,
			'log', format('deleted %s objects under %s', j.state ->> 'deleted', j.state ->> 'prefix'))
	END;

-- Takes back what happened when a worker carried out an effect, and decides
-- what follows.  Returns 'applied', or 'stale' when the token is no longer
-- the job's (the job was recovered and claimed again meanwhile): a slow
-- worker never overwrites newer state.
CREATE OR REPLACE FUNCTION hagen.complete_job(job_id bigint, token bigint, outcome jsonb)
	RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
	o jsonb := coalesce(outcome, '{}');
	decision jsonb;
BEGIN
	SELECT * INTO j FROM hagen.job WHERE id = complete_job.job_id FOR UPDATE;
	IF NOT FOUND OR j.status <> 'running' OR j.lease_token IS DISTINCT FROM complete_job.token THEN
		RETURN 'stale';
	END IF;

	-- Read a JSON body once, so adapters see it as jsonb under "body".
	IF o ? 'body_text' AND NOT o ? 'body' THEN
		o := o || jsonb_build_object('body', hagen._try_jsonb(o ->> 'body_text'));
	END IF;

	BEGIN
		decision := hagen._interpret(j, o);
	EXCEPTION WHEN others THEN
		decision := jsonb_build_object('action', 'retry',
			'error', format('could not interpret the answer to step %s: %s', j.step, SQLERRM));
	END;
	IF decision IS NULL OR NOT decision ? 'action' THEN
		decision := jsonb_build_object('action', 'fail',
			'error', format('no decision for step %s of a %s job', j.step, j.kind));
	END IF;

	IF j.cancel_requested THEN
		-- Keep what we learnt (a provider request id above all, or a
		-- multipart upload to abort), then stop.
		IF decision ? 'request_id' OR decision ? 'state' THEN
			j.request_id := coalesce(decision ->> 'request_id', j.request_id);
			j.state := j.state || coalesce(decision -> 'state', '{}');
			UPDATE hagen.job SET request_id = j.request_id, state = j.state WHERE id = j.id;
		END IF;
		PERFORM hagen._cancel_job(j);
		RETURN 'applied';
	END IF;

	PERFORM hagen._apply(j, decision, o);
	RETURN 'applied';
END;
$$;

-- Applies a decision to a job: advance to a step, retry the step after a
-- back-off, fail, or succeed.  Logs what it does.
CREATE OR REPLACE FUNCTION hagen._apply(j hagen.job, decision jsonb, outcome jsonb DEFAULT NULL)
	RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	action text := decision ->> 'action';
	err text := decision ->> 'error';
	delay interval;
	retry_after interval;
	new_state jsonb := j.state || coalesce(decision -> 'state', '{}');
	req text := coalesce(decision ->> 'request_id', j.request_id);
	summary jsonb;
BEGIN
	summary := jsonb_strip_nulls(jsonb_build_object('step', j.step, 'attempt', j.attempts,
		'http_status', outcome -> 'status', 'transport_error', outcome -> 'error',
		'elapsed_ms', outcome -> 'elapsed_ms'));

	IF action = 'retry' AND j.attempts >= coalesce((decision ->> 'max_attempts')::integer,
													hagen._max_attempts()) THEN
		action := 'fail';
		err := format('gave up on step %s after %s attempts: %s', j.step, j.attempts, err);
	END IF;

	IF decision ? 'log' THEN
		PERFORM hagen._log(j.id, j.project_id, 'info', decision ->> 'log', summary);
	END IF;

	CASE action
	WHEN 'advance' THEN
		delay := coalesce(make_interval(secs => (decision ->> 'delay_ms')::float8 / 1000), '0');
		UPDATE hagen.job
		SET status = 'queued', step = coalesce(decision ->> 'step', j.step), state = new_state,
			request_id = req, attempts = CASE WHEN decision ->> 'step' = j.step
											  AND (decision ->> 'keep_attempts')::boolean
											  THEN attempts ELSE 0 END,
			run_at = now() + delay, lease_token = NULL, lease_owner = NULL,
			lease_expires_at = NULL, last_error = NULL,
			submit_unconfirmed = coalesce((decision ->> 'unconfirmed')::boolean, false)
		WHERE id = j.id;
		IF decision ->> 'step' IS DISTINCT FROM j.step THEN
			PERFORM hagen._log(j.id, j.project_id, 'info',
				format('step %s done; next: %s', j.step, decision ->> 'step'), summary);
		END IF;
		IF (decision ->> 'schedule_parts')::boolean THEN
			PERFORM hagen._upload_schedule(j.id);
		END IF;
		IF j.kind IN ('clip', 'transition') AND (decision ->> 'step' IS DISTINCT FROM j.step
			OR new_state ->> 'provider_status' IS DISTINCT FROM j.state ->> 'provider_status'
			OR new_state ->> 'provider_progress' IS DISTINCT FROM j.state ->> 'provider_progress') THEN
			PERFORM hagen._advance_project(j.project_id);
		END IF;
	WHEN 'retry' THEN
		delay := hagen._backoff(j.attempts);
		retry_after := make_interval(secs => (decision ->> 'retry_after_ms')::float8 / 1000);
		IF retry_after IS NOT NULL AND retry_after > delay THEN
			delay := least(retry_after, interval '1 hour');
		END IF;
		UPDATE hagen.job
		SET status = 'queued', state = new_state, request_id = req, run_at = now() + delay,
			lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, last_error = err
		WHERE id = j.id;
		PERFORM hagen._log(j.id, j.project_id, 'warning',
			format('step %s failed (attempt %s), retrying in %s ms: %s', j.step, j.attempts,
				   round(extract(epoch FROM delay) * 1000), err),
			summary || jsonb_build_object('retry_in_ms', round(extract(epoch FROM delay) * 1000)));
	WHEN 'fail' THEN
		UPDATE hagen.job
		SET status = 'failed', state = new_state, request_id = req, last_error = err,
			submit_unconfirmed = coalesce((decision ->> 'unconfirmed')::boolean, submit_unconfirmed),
			lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, finished_at = now()
		WHERE id = j.id
		RETURNING * INTO j;
		PERFORM hagen._log(j.id, j.project_id, 'error', err, summary);
		PERFORM hagen._job_finished(j);
	WHEN 'succeed' THEN
		UPDATE hagen.job
		SET status = 'succeeded', state = new_state, request_id = req, last_error = NULL,
			cost_cents = coalesce((decision ->> 'cost_cents')::integer, cost_cents),
			lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, finished_at = now()
		WHERE id = j.id
		RETURNING * INTO j;
		PERFORM hagen._log(j.id, j.project_id, 'info', format('%s job succeeded', j.kind), summary);
		PERFORM hagen._job_finished(j);
	ELSE
		RAISE EXCEPTION 'unknown job decision "%"', action;
	END CASE;
END;
$$;

-- The effect the current step of a job needs, by job kind.
CREATE OR REPLACE FUNCTION hagen._effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.kind
	WHEN 'clip', 'transition' THEN RETURN hagen._generation_effect(j);
	WHEN 'compile' THEN RETURN hagen._compile_effect(j);
	WHEN 'cancel' THEN RETURN hagen._provider_cancel_effect(j);
	WHEN 'upload_part' THEN RETURN hagen._upload_part_effect(j);
	WHEN 'purge' THEN RETURN hagen._purge_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown job kind "%"', j.kind;
END;
$$;

-- How to read the outcome of the current step of a job, by job kind.
CREATE OR REPLACE FUNCTION hagen._interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.kind
	WHEN 'clip', 'transition' THEN RETURN hagen._generation_interpret(j, o);
	WHEN 'compile' THEN RETURN hagen._compile_interpret(j, o);
	WHEN 'cancel' THEN RETURN hagen._provider_cancel_interpret(j, o);
	WHEN 'upload_part' THEN RETURN hagen._upload_part_interpret(j, o);
	WHEN 'purge' THEN RETURN hagen._purge_interpret(j, o);
	END CASE;
	RAISE EXCEPTION 'unknown job kind "%"', j.kind;
END;
$$;

-- A short readable error from an answer body: a JSON "detail" (string or
-- list of {msg}), an "error" / "message" field, an S3 XML Code/Message, or
-- the start of the body.
CREATE OR REPLACE FUNCTION hagen._error_text(o jsonb) RETURNS text
	LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	b jsonb := o -> 'body';
	t text := o ->> 'body_text';
	d jsonb;
	r text;
BEGIN
	IF o ? 'error' AND o ->> 'error' IS NOT NULL AND coalesce((o ->> 'status')::integer, 0) = 0 THEN
		RETURN o ->> 'error';
	END IF;
	IF jsonb_typeof(b) = 'object' THEN
		d := b -> 'detail';
		IF jsonb_typeof(d) = 'string' THEN
			RETURN d #>> '{}';
		ELSIF jsonb_typeof(d) = 'array' THEN
			SELECT string_agg(coalesce(e ->> 'msg', e #>> '{}')
							  || coalesce(' (' || (e ->> 'type') || ')', ''), '; ')
			INTO r FROM jsonb_array_elements(d) AS e;
			RETURN r;
		ELSIF jsonb_typeof(b -> 'error') = 'string' THEN
			RETURN b ->> 'error';
		ELSIF jsonb_typeof(b -> 'error') = 'object' THEN
			RETURN coalesce(b -> 'error' ->> 'message', b ->> 'error');
		ELSIF b ? 'message' THEN
			RETURN b ->> 'message';
		END IF;
	END IF;
	IF t ~ '<Code>' THEN
		RETURN coalesce(hagen._s3_error(o), hagen._xml_value(t, 'Code'));
	END IF;
	RETURN nullif(left(regexp_replace(coalesce(t, ''), '\s+', ' ', 'g'), 200), '');
END;
$$;

-- Records the end of a job on its clip or project and moves the project on.
CREATE OR REPLACE FUNCTION hagen._job_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	st text := CASE j.status WHEN 'succeeded' THEN 'completed' ELSE j.status END;
BEGIN
	IF j.state ? 'upload_id' AND j.kind IN ('clip', 'transition') AND j.status <> 'succeeded'
	   AND NOT j.state ? 'upload_done' THEN
		PERFORM hagen._upload_abandon(j);
	END IF;
	CASE j.kind
	WHEN 'clip' THEN
		UPDATE hagen.video_clip c
		SET status = CASE WHEN c.status = 'canceled' AND st <> 'completed' THEN c.status ELSE st END,
			clip_url = CASE WHEN st = 'completed' THEN j.state ->> 'url' ELSE c.clip_url END,
			cost_cents = c.cost_cents + j.cost_cents,
			error_message = CASE WHEN st = 'failed' THEN j.last_error ELSE NULL END
		WHERE c.id = j.clip_id;
	WHEN 'transition' THEN
		UPDATE hagen.video_clip c
		SET transition_status = CASE WHEN c.transition_status = 'canceled' AND st <> 'completed'
									 THEN c.transition_status ELSE st END,
			transition_clip_url = CASE WHEN st = 'completed' THEN j.state ->> 'url'
									   ELSE c.transition_clip_url END,
			cost_cents = c.cost_cents + j.cost_cents
		WHERE c.id = j.clip_id;
	WHEN 'compile' THEN
		PERFORM hagen._compile_finished(j);
		RETURN;
	WHEN 'upload_part' THEN
		PERFORM hagen._upload_part_finished(j);
		RETURN;
	ELSE
		RETURN;
	END CASE;
	PERFORM hagen._advance_project(j.project_id);
END;
$$;

-- How far a generation job has come, from 0 to 1, by its step (and the
-- provider's own progress where it gives one).
CREATE OR REPLACE FUNCTION hagen._job_fraction(j hagen.job) RETURNS numeric
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN j.status NOT IN ('queued', 'running') THEN 1.0
		ELSE CASE j.step
			WHEN 'image_fetch' THEN 0.02 WHEN 'image_initiate' THEN 0.04 WHEN 'image_put' THEN 0.06
			WHEN 'submit' THEN 0.08
			WHEN 'poll' THEN CASE
				WHEN j.state ->> 'provider_progress' ~ '^[0-9.]+$'
					THEN 0.1 + 0.7 * least((j.state ->> 'provider_progress')::numeric, 100) / 100
				WHEN j.state ->> 'provider_status' = 'IN_PROGRESS' THEN 0.45
				ELSE 0.12 END
			WHEN 'result' THEN 0.8 WHEN 'download' THEN 0.85 WHEN 'store' THEN 0.92
			WHEN 'upload_create' THEN 0.9
			WHEN 'upload_parts' THEN 0.9 + 0.08 * (SELECT count(*) FROM jsonb_object_keys(j.state -> 'parts'))
										 / greatest((j.state ->> 'part_count')::numeric, 1)
			WHEN 'upload_complete' THEN 0.98 WHEN 'upload_check' THEN 0.98
			ELSE 0 END
		END;

-- The effect of the current step of a clip or transition job.
CREATE OR REPLACE FUNCTION hagen._generation_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.step
	WHEN 'image_fetch', 'image_initiate', 'image_put', 'submit', 'poll', 'result' THEN
		CASE j.provider
		WHEN 'fal' THEN RETURN hagen._fal_effect(j);
		WHEN 'xai' THEN RETURN hagen._xai_effect(j);
		END CASE;
		RAISE EXCEPTION 'unknown provider "%"', j.provider;
	WHEN 'download' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'GET', 'url', j.state ->> 'video_url',
			'auth', 'none', 'guard', true, 'follow_redirects', true,
			'save_to', j.state ->> 'file', 'max_bytes', hagen._max_download_bytes(),
			'timeout_ms', 600000);
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		RETURN hagen._upload_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a % job', j.step, j.kind;
END;
$$;

-- Reads the outcome of the current step of a clip or transition job.
CREATE OR REPLACE FUNCTION hagen._generation_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	d jsonb;
BEGIN
	CASE j.step
	WHEN 'image_fetch', 'image_initiate', 'image_put', 'submit', 'poll', 'result' THEN
		CASE j.provider
		WHEN 'fal' THEN RETURN hagen._fal_interpret(j, o);
		WHEN 'xai' THEN RETURN hagen._xai_interpret(j, o);
		END CASE;
	WHEN 'download' THEN
		IF o ->> 'error_kind' = 'guard' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('refused to download %s: %s', j.state ->> 'video_url', o ->> 'error'));
		ELSIF o ->> 'error_kind' = 'too_large' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('the video at %s is larger than hagen.max_download_bytes (%s bytes)',
								j.state ->> 'video_url', hagen._max_download_bytes()));
		ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			RETURN jsonb_build_object('action', 'advance',
				'step', hagen._store_step((o ->> 'bytes')::bigint),
				'state', jsonb_build_object('bytes', o -> 'bytes'));
		END IF;
		RETURN coalesce(hagen._transient(o, 'download of the generated video'),
			jsonb_build_object('action', 'fail', 'error',
				format('download of %s failed: HTTP %s%s', j.state ->> 'video_url', status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		d := hagen._upload_interpret(j, o);
		IF d ->> 'action' = 'stored' THEN
			RETURN d || jsonb_build_object('action', 'succeed',
				'cost_cents', coalesce((j.state ->> 'cost_cents')::integer, 0),
				'state', coalesce(d -> 'state', '{}') || jsonb_build_object('url', hagen._stored_url(j.state ->> 'key')));
		END IF;
		RETURN d;
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a % job', j.step, j.kind;
END;
$$;

-- A cancel job sends the provider's cancel request for a request already made.
CREATE OR REPLACE FUNCTION hagen._provider_cancel_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.provider
	WHEN 'fal' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'PUT', 'auth', 'fal',
			'url', coalesce(j.state ->> 'cancel_url',
							hagen._fal_request_url(j.state ->> 'model', j.state ->> 'request_id') || '/cancel'),
			'headers', '{"accept": "application/json"}', 'timeout_ms', 30000);
	WHEN 'xai' THEN
		RETURN hagen._xai_cancel_effect(j);
	WHEN 's3' THEN
		RETURN hagen._upload_abort_effect(j.state ->> 'key', j.state ->> 'upload_id');
	END CASE;
	RAISE EXCEPTION 'unknown provider "%"', j.provider;
END;
$$;

CREATE OR REPLACE FUNCTION hagen._provider_cancel_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	IF o ->> 'type' = 'noop' THEN
		RETURN jsonb_build_object('action', 'succeed', 'log', 'provider has no cancel endpoint');
	ELSIF j.provider = 's3' AND coalesce((o ->> 'status')::integer, 0) BETWEEN 200 AND 499 THEN
		RETURN jsonb_build_object('action', 'succeed', 'log',
			format('abort of the multipart upload of %s answered HTTP %s%s', j.state ->> 'key',
				   o ->> 'status', coalesce(': ' || hagen._s3_error(o), '')));
	ELSIF coalesce((o ->> 'status')::integer, 0) BETWEEN 200 AND 499 THEN
		RETURN jsonb_build_object('action', 'succeed', 'log',
			format('provider answered the cancel of request %s with HTTP %s',
				   j.state ->> 'request_id', o ->> 'status'));
	END IF;
	RETURN hagen._transient(o, 'cancel request') || '{"max_attempts": 3}';
END;
$$;

-- Deletes job history older than hagen.log_retention (default 14 days):
-- log lines, and finished jobs of finished projects (and of none: purges).
-- Returns the number of rows removed.  The dispatcher calls it about once
-- an hour.
CREATE OR REPLACE FUNCTION hagen.purge_history(older_than interval DEFAULT NULL) RETURNS bigint
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

-- Privileges of what is new (90_privileges.sql); CREATE OR REPLACE reset
-- purge_history's SECURITY DEFINER.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA hagen FROM PUBLIC;
ALTER FUNCTION hagen.purge_history(interval) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.delete_project_objects(uuid, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
GRANT EXECUTE ON FUNCTION hagen.delete_project_objects(uuid, text) TO hagen_user;

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
