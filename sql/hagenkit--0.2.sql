-- hagenkit install script, part 00: tables.
--
-- The Makefile concatenates src/sql/*.sql in name order into the versioned
-- install script sql/hagenkit--<version>.sql.  Nothing here is edited after
-- a version is released; changes go into an upgrade script.

\echo Use "CREATE EXTENSION hagenkit" to load this file. \quit

-- A music track that projects may lay under their clips.
CREATE TABLE hagen.music_track (
	id			uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	name		text NOT NULL CHECK (name <> ''),
	audio_url	text NOT NULL,
	category	text,
	mood		text,
	duration	real CHECK (duration IS NULL OR duration > 0),
	created_at	timestamptz NOT NULL DEFAULT now()
);

-- A video project: an ordered list of clips plus the settings of the video.
CREATE TABLE hagen.video_project (
	id						uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	workspace_id			text NOT NULL CHECK (workspace_id <> ''),
	status					text NOT NULL DEFAULT 'pending'
		CHECK (status IN ('pending', 'generating', 'compiling', 'completed', 'failed', 'canceled')),
	aspect_ratio			text NOT NULL DEFAULT '16:9'
		CHECK (aspect_ratio IN ('16:9', '9:16', '1:1')),
	provider				text NOT NULL DEFAULT 'fal' CHECK (provider IN ('fal', 'xai')),
	generate_native_audio	boolean NOT NULL DEFAULT false,
	music_track_id			uuid REFERENCES hagen.music_track (id) ON DELETE SET NULL,
	music_volume			real NOT NULL DEFAULT 0.3 CHECK (music_volume BETWEEN 0 AND 1),
	video_volume			real NOT NULL DEFAULT 1.0 CHECK (video_volume BETWEEN 0 AND 1),
	clip_count				integer NOT NULL DEFAULT 0,
	completed_clips			integer NOT NULL DEFAULT 0,
	failed_clips			integer NOT NULL DEFAULT 0,
	estimated_cost_cents	integer,
	actual_cost_cents		integer NOT NULL DEFAULT 0,
	duration				real,
	thumbnail_url			text,
	final_video_url			text,
	error_message			text,
	progress				jsonb NOT NULL
		DEFAULT '{"step": "created", "label": "Created", "percent": 0}',
	metadata				jsonb NOT NULL DEFAULT '{}',
	created_at				timestamptz NOT NULL DEFAULT now(),
	updated_at				timestamptz NOT NULL DEFAULT now(),
	started_at				timestamptz,
	completed_at			timestamptz
);
CREATE INDEX video_project_workspace_idx ON hagen.video_project (workspace_id, created_at);
CREATE INDEX video_project_active_idx ON hagen.video_project (status)
	WHERE status IN ('generating', 'compiling');

-- One clip of a project: one photo that becomes a few seconds of video.
CREATE TABLE hagen.video_clip (
	id					uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	project_id			uuid NOT NULL REFERENCES hagen.video_project (id) ON DELETE CASCADE,
	image_id			text,
	source_image_url	text NOT NULL,
	end_image_url		text,
	room_type			text,
	room_label			text,
	motion_prompt		text,
	status				text NOT NULL DEFAULT 'pending'
		CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'canceled')),
	clip_url			text,
	transition_type		text NOT NULL DEFAULT 'cut' CHECK (transition_type IN ('cut', 'seamless')),
	transition_status	text
		CHECK (transition_status IN ('pending', 'processing', 'completed', 'failed', 'canceled')),
	transition_clip_url	text,
	duration			real NOT NULL DEFAULT 5 CHECK (duration IN (5, 10)),
	sequence_order		integer NOT NULL CHECK (sequence_order >= 0),
	error_message		text,
	cost_cents			integer NOT NULL DEFAULT 0,
	created_at			timestamptz NOT NULL DEFAULT now(),
	updated_at			timestamptz NOT NULL DEFAULT now(),
	UNIQUE (project_id, sequence_order)
);

-- What a provider charges, in cents per generated second.
CREATE TABLE hagen.pricing (
	provider				text NOT NULL,
	model					text NOT NULL,
	cents_per_second		numeric NOT NULL CHECK (cents_per_second >= 0),
	cents_per_second_audio	numeric NOT NULL CHECK (cents_per_second_audio >= 0),
	PRIMARY KEY (provider, model)
);
INSERT INTO hagen.pricing VALUES
	('fal', 'fal-ai/kling-video/v2.6/pro/image-to-video', 7, 14),
	('fal', 'fal-ai/kling-video/v2.1/pro/image-to-video', 9, 9),
	('xai', 'grok-imagine-video', 5, 5);

-- A job: one unit of pipeline work (a clip, a transition, a compile, a
-- provider-side cancel, a part of a multipart upload, the purge of a
-- project's objects).  It advances through persisted steps; each claim of
-- a job hands one effect to a worker under a lease identified by a token.
-- A purge belongs to no project (it outlives the project it cleans up);
-- a part has its upload's job as parent.
CREATE SEQUENCE hagen.lease_token_seq;
CREATE TABLE hagen.job (
	id					bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	project_id			uuid REFERENCES hagen.video_project (id) ON DELETE CASCADE,
	clip_id				uuid REFERENCES hagen.video_clip (id) ON DELETE CASCADE,
	kind				text NOT NULL CHECK (kind IN ('clip', 'transition', 'compile', 'cancel',
													  'upload_part', 'purge')),
	lane				text NOT NULL DEFAULT 'http' CHECK (lane IN ('http', 'compile')),
	provider			text,
	status				text NOT NULL DEFAULT 'queued'
		CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
	step				text NOT NULL,
	state				jsonb NOT NULL DEFAULT '{}',
	request_id			text,
	submit_unconfirmed	boolean NOT NULL DEFAULT false,
	cancel_requested	boolean NOT NULL DEFAULT false,
	attempts			integer NOT NULL DEFAULT 0,
	total_attempts		integer NOT NULL DEFAULT 0,
	run_at				timestamptz NOT NULL DEFAULT now(),
	lease_token			bigint,
	lease_owner			integer,
	lease_expires_at	timestamptz,
	deadline_at			timestamptz,
	last_error			text,
	cost_cents			integer NOT NULL DEFAULT 0,
	created_at			timestamptz NOT NULL DEFAULT now(),
	updated_at			timestamptz NOT NULL DEFAULT now(),
	started_at			timestamptz,
	finished_at			timestamptz,
	parent_id			bigint REFERENCES hagen.job (id) ON DELETE CASCADE,
	CONSTRAINT job_project_check CHECK (project_id IS NOT NULL OR kind = 'purge')
);
-- At most one live job of each kind per clip, and one live compile per project:
-- this is what makes start_video idempotent even under concurrency.
CREATE UNIQUE INDEX job_one_live_per_clip ON hagen.job (clip_id, kind)
	WHERE status IN ('queued', 'running') AND kind IN ('clip', 'transition');
CREATE UNIQUE INDEX job_one_live_compile ON hagen.job (project_id)
	WHERE status IN ('queued', 'running') AND kind = 'compile';
CREATE INDEX job_due_idx ON hagen.job (lane, run_at, id) WHERE status = 'queued';
CREATE INDEX job_lease_idx ON hagen.job (lane, lease_expires_at) WHERE status = 'running';
CREATE INDEX job_project_idx ON hagen.job (project_id);
-- One job per part of a multipart upload; one live purge per prefix.
CREATE UNIQUE INDEX job_upload_part ON hagen.job (parent_id, ((state ->> 'part')::integer))
	WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX job_one_live_purge ON hagen.job ((state ->> 'prefix'))
	WHERE kind = 'purge' AND status IN ('queued', 'running');

-- The structured log of every job, like a task logger.
CREATE TABLE hagen.job_log (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	job_id		bigint REFERENCES hagen.job (id) ON DELETE CASCADE,
	project_id	uuid REFERENCES hagen.video_project (id) ON DELETE CASCADE,
	logged_at	timestamptz NOT NULL DEFAULT clock_timestamp(),
	level		text NOT NULL CHECK (level IN ('debug', 'info', 'warning', 'error')),
	message		text NOT NULL,
	detail		jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX job_log_job_idx ON hagen.job_log (job_id, id);
CREATE INDEX job_log_project_idx ON hagen.job_log (project_id, id);

-- Which roles may use which workspaces, for apps that give each tenant its
-- own role.  A role listed here (or a member of one) may use only the
-- workspaces listed for it; roles not listed, operators and superusers may
-- use every workspace.  Empty by default: one trusted app.
CREATE TABLE hagen.workspace_role (
	workspace_id	text NOT NULL CHECK (workspace_id <> ''),
	role_name		name NOT NULL,
	PRIMARY KEY (workspace_id, role_name)
);
-- hagenkit install script, part 10: small helpers shared by everything else.

-- Functions implemented in C (src/sql_funcs.c).
CREATE FUNCTION hagen._wake() RETURNS void
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hagen_wake';
COMMENT ON FUNCTION hagen._wake() IS
	'Wakes the hagenkit workers when the calling transaction commits.';

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

-- Appends a line to the job log.
CREATE FUNCTION hagen._log(job bigint, project uuid, level text, message text,
						   detail jsonb DEFAULT '{}') RETURNS void
	LANGUAGE sql VOLATILE AS $$
	INSERT INTO hagen.job_log (job_id, project_id, level, message, detail)
	VALUES (job, project, level, message, coalesce(detail, '{}'));
$$;

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

-- Keeps updated_at current.
CREATE FUNCTION hagen._touch() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	NEW.updated_at := now();
	RETURN NEW;
END;
$$;
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
CREATE TRIGGER video_project_notify AFTER INSERT OR UPDATE ON hagen.video_project
	FOR EACH ROW EXECUTE FUNCTION hagen._notify_project();

-- Jobs that become due wake the workers at commit.
CREATE FUNCTION hagen._wake_trigger() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'hagen_wake_trigger';
CREATE TRIGGER job_wake AFTER INSERT OR UPDATE OF status, run_at ON hagen.job
	FOR EACH STATEMENT EXECUTE FUNCTION hagen._wake_trigger();
-- hagenkit install script, part 20: the public API for building projects.

-- Checks that a URL given by a user is http(s); the network guard in C
-- checks the address it resolves to when it is fetched.
CREATE FUNCTION hagen._check_url(what text, url text) RETURNS void
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF url IS NULL OR url = '' THEN
		RAISE EXCEPTION '% must not be empty', what
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass an http:// or https:// URL.';
	END IF;
	IF url !~* '^https?://[^/?#[:space:]]+' OR url ~ '[[:cntrl:][:space:]]' THEN
		RAISE EXCEPTION '% "%" is not an http(s) URL', what, left(url, 200)
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Only http:// and https:// URLs without spaces or control characters are accepted.',
				  HINT = 'Pass a public http:// or https:// URL of the file.';
	END IF;
END;
$$;

-- Checks one of the choice-valued settings of a project or clip.
CREATE FUNCTION hagen._check_choice(what text, value anycompatible, allowed anycompatiblearray)
	RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF value IS NULL OR NOT value = ANY (allowed) THEN
		RAISE EXCEPTION 'invalid % "%"', what, coalesce(value::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Use one of: %s.', array_to_string(allowed, ', '));
	END IF;
END;
$$;

CREATE FUNCTION hagen._check_volume(what text, value real) RETURNS void
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF value IS NULL OR value = 'NaN'::real OR value < 0 OR value > 1 THEN
		RAISE EXCEPTION 'invalid % %', what, coalesce(value::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A volume is a number from 0 (silent) to 1 (full).';
	END IF;
END;
$$;

-- Creates a video project and returns its id.
CREATE FUNCTION hagen.create_project(workspace_id text,
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

-- Adds a clip to a project that has not started yet and returns its id.
-- A NULL sequence_order appends the clip after the last one.
CREATE FUNCTION hagen.add_clip(project_id uuid,
							   source_image_url text,
							   end_image_url text DEFAULT NULL,
							   room_type text DEFAULT NULL,
							   room_label text DEFAULT NULL,
							   motion_prompt text DEFAULT NULL,
							   duration real DEFAULT 5,
							   transition_type text DEFAULT 'cut',
							   sequence_order integer DEFAULT NULL,
							   image_id text DEFAULT NULL)
	RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
	seq integer := sequence_order;
	new_id uuid;
BEGIN
	p := hagen._project(project_id);
	PERFORM 1 FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	IF p.status NOT IN ('pending', 'failed', 'canceled', 'completed') THEN
		RAISE EXCEPTION 'cannot add a clip to video project % while it is %', p.id, p.status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Wait until the project has finished, or cancel it with hagen.cancel_video().';
	END IF;
	PERFORM hagen._check_url('source image URL', source_image_url);
	IF end_image_url IS NOT NULL THEN
		PERFORM hagen._check_url('end image URL', end_image_url);
	END IF;
	PERFORM hagen._check_choice('clip duration', duration, ARRAY[5, 10]::real[]);
	PERFORM hagen._check_choice('transition type', transition_type, ARRAY['cut', 'seamless']);
	IF motion_prompt IS NOT NULL AND length(motion_prompt) > 2000 THEN
		RAISE EXCEPTION 'motion prompt is % characters long', length(motion_prompt)
			USING ERRCODE = 'string_data_right_truncation',
				  HINT = 'Keep it under 2000 characters; providers refuse longer prompts.';
	END IF;
	IF seq IS NULL THEN
		SELECT coalesce(max(c.sequence_order) + 1, 0) INTO seq
		FROM hagen.video_clip c WHERE c.project_id = p.id;
	ELSIF seq < 0 THEN
		RAISE EXCEPTION 'invalid sequence order %', seq
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a number of 0 or more, or NULL to append.';
	ELSIF EXISTS (SELECT 1 FROM hagen.video_clip c
				  WHERE c.project_id = p.id AND c.sequence_order = seq) THEN
		RAISE EXCEPTION 'video project % already has a clip at sequence order %', p.id, seq
			USING ERRCODE = 'unique_violation',
				  HINT = 'Pick a free position, or pass NULL to append.';
	END IF;

	INSERT INTO hagen.video_clip AS c (project_id, image_id, source_image_url, end_image_url,
			room_type, room_label, motion_prompt, duration, transition_type, sequence_order)
	VALUES (p.id, image_id, source_image_url, end_image_url, room_type, room_label,
			nullif(btrim(motion_prompt), ''), duration, transition_type, seq)
	RETURNING c.id INTO new_id;
	UPDATE hagen.video_project v SET clip_count = v.clip_count + 1 WHERE v.id = p.id;
	RETURN new_id;
END;
$$;

-- Adds a music track and returns its id.
CREATE FUNCTION hagen.add_music_track(name text, audio_url text,
									  category text DEFAULT NULL,
									  mood text DEFAULT NULL,
									  duration real DEFAULT NULL)
	RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	new_id uuid;
BEGIN
	IF name IS NULL OR btrim(name) = '' THEN
		RAISE EXCEPTION 'music track name must not be empty'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the track a name.';
	END IF;
	PERFORM hagen._check_url('music track URL', audio_url);
	IF duration IS NOT NULL AND NOT (duration > 0 AND duration < 86400) THEN
		RAISE EXCEPTION 'invalid music track duration %', duration
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give the length in seconds, or NULL when unknown.';
	END IF;
	INSERT INTO hagen.music_track AS m (name, audio_url, category, mood, duration)
	VALUES (add_music_track.name, audio_url, category, mood, add_music_track.duration)
	RETURNING m.id INTO new_id;
	RETURN new_id;
END;
$$;

-- The storage key of a file of a project: {workspace_id}/videos/{project_id}/{filename}.
CREATE FUNCTION hagen.get_video_path(workspace_id text, project_id uuid, filename text)
	RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF workspace_id IS NULL OR workspace_id = '' OR workspace_id ~ '[/[:cntrl:]]'
	   OR workspace_id IN ('.', '..') THEN
		RAISE EXCEPTION 'invalid workspace id "%"', coalesce(workspace_id, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a non-empty id without "/" or control characters.';
	END IF;
	IF project_id IS NULL THEN
		RAISE EXCEPTION 'project id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF filename IS NULL OR filename = '' OR filename ~ '[/\\[:cntrl:]]'
	   OR filename IN ('.', '..') THEN
		RAISE EXCEPTION 'invalid file name "%"', coalesce(filename, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a plain file name such as "final.mp4", without "/" or "..".';
	END IF;
	RETURN workspace_id || '/videos/' || project_id || '/' || filename;
END;
$$;

-- The public URL of a storage key: the hagen.public_url base plus the key,
-- each path segment percent-encoded.
CREATE FUNCTION hagen.public_url(key text) RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := rtrim(hagen._setting('hagen.public_url'), '/');
BEGIN
	PERFORM hagen._check_key(key);
	IF base IS NULL THEN
		RAISE EXCEPTION 'hagen.public_url is not set'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Set hagen.public_url (or R2_PUBLIC_URL) to the public base URL of the bucket.';
	END IF;
	RETURN base || '/' || hagen._uri_encode(key, true);
END;
$$;
-- hagenkit install script, part 30: the job engine.
--
-- Workers (C) call three functions:
--   hagen.claim_jobs(lane, n)            -> due jobs, each with a lease token and one effect
--   hagen.complete_job(job, token, outcome) -> SQL interprets what happened and decides
--   hagen.next_due(lane)                 -> how long a worker may sleep
-- A job advances through persisted steps.  Every decision (what a step needs,
-- how an answer is read, whether to retry, what follows) is taken here; the
-- adapters for each job kind and provider plug in through _effect/_interpret.

-- How many times one step may be tried before the job fails.
CREATE FUNCTION hagen._max_attempts() RETURNS integer
	LANGUAGE sql STABLE RETURN hagen._setting('hagen.max_attempts', '8')::integer;

-- Puts a job in the queue unless an equivalent live job exists; returns its id or NULL.
CREATE FUNCTION hagen._enqueue(project uuid, clip uuid, kind text, provider text,
							   step text, state jsonb, lane text DEFAULT 'http',
							   time_limit interval DEFAULT NULL)
	RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	new_id bigint;
BEGIN
	INSERT INTO hagen.job (project_id, clip_id, kind, lane, provider, step, state, deadline_at)
	VALUES (project, clip, kind, lane, provider, step, state, now() + time_limit)
	ON CONFLICT DO NOTHING
	RETURNING id INTO new_id;
	IF new_id IS NOT NULL THEN
		PERFORM hagen._log(new_id, project, 'info', format('%s job queued', kind),
						   jsonb_build_object('step', step, 'clip_id', clip));
	END IF;
	RETURN new_id;
END;
$$;

-- Takes up a job whose worker died or hung: its step is re-run from its
-- recorded state.  A submit is the exception: it may have reached the
-- provider (and be billed), so unless hagen.resubmit_unconfirmed is on it
-- is not sent again; the job fails and hagen.retry_video() resends it.
CREATE FUNCTION hagen._recover(j hagen.job, reason text) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	IF j.kind IN ('clip', 'transition') AND j.step = 'submit'
	   AND NOT coalesce(hagen._setting('hagen.resubmit_unconfirmed', 'off')::boolean, false) THEN
		PERFORM hagen._apply(j, jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to %s unconfirmed: %s while the request was being sent. It may have reached the provider and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							j.provider, reason)));
		RETURN;
	END IF;
	UPDATE hagen.job
	SET status = 'queued', run_at = now(), lease_token = NULL, lease_owner = NULL,
		lease_expires_at = NULL, last_error = reason
	WHERE id = j.id;
	PERFORM hagen._log(j.id, j.project_id, 'warning', reason || '; job taken up again',
					   jsonb_build_object('step', j.step));
END;
$$;

-- Takes up the running jobs of a lane whose worker is gone: with
-- expired_only, those whose lease has expired; otherwise (a worker
-- starting) those held by a backend that no longer exists.
CREATE FUNCTION hagen._recover_lane(lane text, expired_only boolean) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
	n integer := 0;
BEGIN
	FOR j IN SELECT * FROM hagen.job q
			 WHERE q.lane = _recover_lane.lane AND q.status = 'running'
			   AND CASE WHEN expired_only THEN q.lease_expires_at < now()
						ELSE NOT EXISTS (SELECT 1 FROM pg_stat_activity a
										 WHERE a.pid = q.lease_owner AND a.pid <> pg_backend_pid()) END
			 ORDER BY q.id FOR UPDATE SKIP LOCKED
	LOOP
		PERFORM hagen._recover(j, CASE WHEN expired_only THEN 'lease expired' ELSE 'worker restarted' END);
		n := n + 1;
	END LOOP;
	RETURN n;
END;
$$;

-- Called by a worker when it starts: the jobs of its lane held by a backend
-- that no longer exists are taken up at once instead of waiting for their
-- leases to expire.
CREATE FUNCTION hagen.recover_jobs(lane text) RETURNS integer
	LANGUAGE sql RETURN hagen._recover_lane(lane, false);

-- The milliseconds until the next job of a lane falls due (0 when one is due
-- now), or NULL when nothing is queued or leased.
CREATE FUNCTION hagen.next_due(lane text) RETURNS bigint
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

-- Claims up to max_jobs due jobs of a lane for the calling worker.  Each
-- comes with a fresh lease token and the one effect its current step needs.
CREATE FUNCTION hagen.claim_jobs(lane text, max_jobs integer,
								 lease interval DEFAULT '2 minutes')
	RETURNS TABLE (job_id bigint, token bigint, effect jsonb)
	LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
	eff jsonb;
	tok bigint;
	timeout_ms bigint;
BEGIN
	IF max_jobs IS NULL OR max_jobs <= 0 THEN
		RETURN;
	END IF;
	PERFORM hagen._recover_lane(claim_jobs.lane, true);

	FOR j IN
		SELECT * FROM hagen.job q
		WHERE q.lane = claim_jobs.lane AND q.status = 'queued' AND q.run_at <= now()
		ORDER BY q.run_at, q.id
		LIMIT max_jobs
		FOR UPDATE SKIP LOCKED
	LOOP
		-- A job past its time limit, or of a canceled project, gets no effect.
		IF j.deadline_at IS NOT NULL AND j.deadline_at < now() THEN
			PERFORM hagen._apply(j, jsonb_build_object('action', 'fail', 'error',
				format('%s job did not finish within its time limit (%s)', j.kind,
					   CASE j.kind WHEN 'compile' THEN 'hagen.compile_timeout'
								   ELSE 'hagen.clip_timeout' END)));
			-- A request still at the provider is canceled there.
			IF j.request_id IS NOT NULL AND j.step IN ('poll', 'result') THEN
				PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', j.provider, 'cancel',
					jsonb_build_object('request_id', j.request_id, 'for_job', j.id,
									   'model', j.state ->> 'model', 'cancel_url', j.state ->> 'cancel_url'));
			END IF;
			CONTINUE;
		END IF;
		IF j.cancel_requested THEN
			PERFORM hagen._cancel_job(j);
			CONTINUE;
		END IF;

		BEGIN
			eff := hagen._effect(j);
		EXCEPTION WHEN others THEN
			PERFORM hagen._apply(j, jsonb_build_object('action', 'fail',
				'error', format('could not prepare step %s: %s', j.step, SQLERRM)));
			CONTINUE;
		END;

		tok := nextval('hagen.lease_token_seq');
		timeout_ms := coalesce((eff ->> 'timeout_ms')::bigint, 60000);
		UPDATE hagen.job
		SET status = 'running', lease_token = tok, lease_owner = pg_backend_pid(),
			lease_expires_at = now() + greatest(lease, make_interval(secs => timeout_ms / 1000.0 + 60)),
			attempts = attempts + 1, total_attempts = total_attempts + 1,
			started_at = coalesce(started_at, now())
		WHERE id = j.id;
		job_id := j.id;
		token := tok;
		effect := eff;
		RETURN NEXT;
	END LOOP;
END;
$$;

-- Lets a worker that is still busy with a long effect (a compile) keep its
-- lease and report progress.  Returns false when the lease was lost.
CREATE FUNCTION hagen.heartbeat(job_id bigint, token bigint, progress jsonb DEFAULT NULL,
								extend interval DEFAULT '2 minutes')
	RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
BEGIN
	SELECT * INTO j FROM hagen.job WHERE id = heartbeat.job_id FOR UPDATE;
	IF NOT FOUND OR j.status <> 'running' OR j.lease_token IS DISTINCT FROM heartbeat.token THEN
		RETURN false;
	END IF;
	UPDATE hagen.job SET lease_expires_at = greatest(lease_expires_at, now() + extend)
	WHERE id = j.id;
	IF progress IS NOT NULL THEN
		PERFORM hagen._set_progress(j.project_id, progress ->> 'step', progress ->> 'label',
									(progress ->> 'percent')::numeric);
	END IF;
	RETURN NOT j.cancel_requested;
END;
$$;

-- Takes back what happened when a worker carried out an effect, and decides
-- what follows.  Returns 'applied', or 'stale' when the token is no longer
-- the job's (the job was recovered and claimed again meanwhile): a slow
-- worker never overwrites newer state.
CREATE FUNCTION hagen.complete_job(job_id bigint, token bigint, outcome jsonb)
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

-- Takes back many outcomes in one transaction: a JSON array of
-- {"job_id", "token", "outcome"}.  Each is applied in a subtransaction of
-- its own, so a bad one is failed alone.  Returns how many were applied.
CREATE FUNCTION hagen.complete_jobs(outcomes jsonb) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	x jsonb;
	n integer := 0;
BEGIN
	FOR x IN SELECT * FROM jsonb_array_elements(outcomes) LOOP
		BEGIN
			IF hagen.complete_job((x ->> 'job_id')::bigint, (x ->> 'token')::bigint,
								  x -> 'outcome') = 'applied' THEN
				n := n + 1;
			END IF;
		EXCEPTION WHEN others THEN
			PERFORM hagen.fail_job((x ->> 'job_id')::bigint, (x ->> 'token')::bigint,
				'the outcome of this step could not be recorded: ' || SQLERRM);
		END;
	END LOOP;
	RETURN n;
END;
$$;

-- Records a failure that happened in a worker outside any effect (for
-- example a crash of the C code that carried the effect out).
CREATE FUNCTION hagen.fail_job(job_id bigint, token bigint, error text)
	RETURNS text LANGUAGE sql AS $$
	SELECT hagen.complete_job(job_id, token,
		jsonb_build_object('status', 0, 'error', error, 'phase', 'worker'));
$$;

-- Applies a decision to a job: advance to a step, retry the step after a
-- back-off, fail, or succeed.  Logs what it does.
CREATE FUNCTION hagen._apply(j hagen.job, decision jsonb, outcome jsonb DEFAULT NULL)
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

-- Cancels a job: a provider request already made gets a cancel request of
-- its own; the job's clip is marked canceled.
CREATE FUNCTION hagen._cancel_job(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	UPDATE hagen.job
	SET status = 'canceled', lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL,
		finished_at = now(), last_error = 'canceled'
	WHERE id = j.id
	RETURNING * INTO j;
	PERFORM hagen._log(j.id, j.project_id, 'info', format('%s job canceled', j.kind),
					   jsonb_build_object('step', j.step));
	IF j.request_id IS NOT NULL AND j.kind IN ('clip', 'transition')
	   AND j.step IN ('submit', 'poll', 'result') THEN
		PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', j.provider, 'cancel',
			jsonb_build_object('request_id', j.request_id, 'for_job', j.id, 'model', j.state ->> 'model',
							   'cancel_url', j.state ->> 'cancel_url'));
	END IF;
	PERFORM hagen._job_finished(j);
END;
$$;

-- The effect the current step of a job needs, by job kind.
CREATE FUNCTION hagen._effect(j hagen.job) RETURNS jsonb
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
CREATE FUNCTION hagen._interpret(j hagen.job, o jsonb) RETURNS jsonb
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

-- The decision for an answer that failed in a way worth retrying (transport
-- errors, 429 and 5xx), honouring Retry-After; or NULL when it did not.
CREATE FUNCTION hagen._transient(o jsonb, what text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	ra text := o -> 'headers' ->> 'retry-after';
	ra_ms bigint;
BEGIN
	IF status <> 0 AND status <> 429 AND status < 500 THEN
		RETURN NULL;
	END IF;
	IF ra ~ '^\s*\d+(\.\d+)?\s*$' THEN
		ra_ms := (ra::numeric * 1000)::bigint;
	END IF;
	RETURN jsonb_strip_nulls(jsonb_build_object('action', 'retry', 'retry_after_ms', ra_ms,
		'error', CASE WHEN status = 0
					  THEN format('%s: %s', what, coalesce(o ->> 'error', 'no answer'))
					  ELSE format('%s: HTTP %s%s', what, status,
								  coalesce(': ' || left(hagen._error_text(o), 300), '')) END));
END;
$$;

-- A short readable error from an answer body: a JSON "detail" (string or
-- list of {msg}), an "error" / "message" field, an S3 XML Code/Message, or
-- the start of the body.
CREATE FUNCTION hagen._error_text(o jsonb) RETURNS text
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
-- hagenkit install script, part 40: prompts and costs.

-- The default camera motion for each room type, used when a clip has no
-- motion prompt of its own.  Operators may edit or add rows.
CREATE TABLE hagen.room_prompt (
	room_type	text PRIMARY KEY CHECK (room_type = lower(room_type)),
	prompt		text NOT NULL CHECK (prompt <> ''),
	ambience	text NOT NULL CHECK (ambience <> '')
);
INSERT INTO hagen.room_prompt VALUES
	('exterior', 'Slow cinematic push-in toward the front of the house, gentle parallax on the landscaping, soft daylight, steady gimbal shot', 'birdsong and a light breeze outside'),
	('front_yard', 'Smooth glide along the front path toward the entrance, plants swaying slightly, warm natural light', 'birdsong and leaves rustling'),
	('backyard', 'Wide slow pan across the backyard revealing the lawn and seating area, calm afternoon light', 'birds and a distant breeze'),
	('pool', 'Low slow dolly along the pool edge, water surface shimmering gently, bright clear sky', 'soft water lapping'),
	('patio', 'Slow lateral slide across the patio furniture toward the view, relaxed late-afternoon light', 'a light breeze and distant birds'),
	('balcony', 'Gentle push out across the balcony toward the view, curtains moving softly', 'open-air city or nature ambience'),
	('living_room', 'Slow smooth dolly forward through the living room, subtle parallax between furniture, bright inviting light', 'a quiet, warm room tone'),
	('family_room', 'Gentle arc around the seating area, soft daylight through the windows, cosy atmosphere', 'a quiet, warm room tone'),
	('kitchen', 'Slow glide along the kitchen island revealing the countertops and appliances, crisp clean light', 'a faint kitchen hum'),
	('dining_room', 'Slow orbit around the dining table, light catching the tableware, elegant steady motion', 'a calm, quiet room tone'),
	('bedroom', 'Slow gentle push-in toward the bed, soft morning light through the curtains, serene mood', 'a very quiet, restful room tone'),
	('primary_bedroom', 'Slow graceful dolly across the primary bedroom toward the windows, soft natural light, calm luxury', 'a very quiet, restful room tone'),
	('bathroom', 'Slow pan across the vanity and shower, gleaming surfaces, bright spa-like light', 'a faint echo of a quiet bathroom'),
	('office', 'Slow push toward the desk and window, focused calm light, tidy workspace', 'a quiet study room tone'),
	('hallway', 'Smooth steady walk-through down the hallway, gentle forward motion, even light', 'soft footsteps in a quiet hall'),
	('entryway', 'Slow forward glide through the entrance into the home, welcoming light', 'a door closing softly and a quiet hall'),
	('staircase', 'Slow upward tilt and glide following the staircase, elegant lines, soft light', 'a quiet stairwell'),
	('garage', 'Slow lateral pan across the garage space, clean even lighting', 'a quiet garage echo'),
	('laundry', 'Slow push toward the laundry appliances and storage, bright clean light', 'a faint appliance hum'),
	('basement', 'Slow wide pan across the finished basement, warm even light', 'a quiet, muffled room tone'),
	('view', 'Slow cinematic pan across the view from the property, atmospheric depth, golden light', 'wind and distant ambience');

-- The motion prompt for a room type (or a general one).
CREATE FUNCTION hagen._room_prompt(room_type text) RETURNS text
	LANGUAGE sql STABLE
	RETURN coalesce(
		(SELECT prompt FROM hagen.room_prompt r
		 WHERE r.room_type = lower(regexp_replace(btrim(_room_prompt.room_type), '[\s-]+', '_', 'g'))),
		'Slow smooth cinematic camera motion through the space, subtle parallax, natural light, photorealistic real estate video');

-- The full prompt of a clip: its own or its room's motion, and with native
-- audio on, a sound description from the music's mood and category and the room.
CREATE FUNCTION hagen._clip_prompt(c hagen.video_clip, p hagen.video_project) RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	prompt text := coalesce(c.motion_prompt, hagen._room_prompt(c.room_type));
	m hagen.music_track;
	ambience text;
BEGIN
	IF NOT p.generate_native_audio THEN
		RETURN prompt;
	END IF;
	SELECT r.ambience INTO ambience FROM hagen.room_prompt r
	WHERE r.room_type = lower(regexp_replace(btrim(c.room_type), '[\s-]+', '_', 'g'));
	SELECT * INTO m FROM hagen.music_track WHERE id = p.music_track_id;
	RETURN prompt || '. Sound: ' || coalesce(ambience, 'a natural, quiet ambience of the space')
		|| CASE WHEN m.id IS NOT NULL THEN
				format(', in a %s mood that suits %s music',
					   coalesce(nullif(btrim(m.mood), ''), 'calm'),
					   coalesce(nullif(btrim(m.category), ''), 'background'))
		   ELSE '' END
		|| '; no speech, no music.';
END;
$$;

-- The fixed prompt of a seamless transition between two clips.
CREATE FUNCTION hagen._transition_prompt() RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN 'Seamless continuous camera move from the first view into the next space, smooth steady motion, consistent lighting, photorealistic, no cuts';

CREATE FUNCTION hagen._negative_prompt() RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN 'blur, distortion, warped walls, bent lines, people, text, watermark, flicker, low quality';

-- Cents for generating seconds of video on a provider and model; NULL when
-- the model has no price.
CREATE FUNCTION hagen._cost_cents(provider text, model text, seconds numeric, audio boolean)
	RETURNS integer LANGUAGE sql STABLE
	RETURN (SELECT ceil(seconds * CASE WHEN audio THEN cents_per_second_audio
									   ELSE cents_per_second END)::integer
			FROM hagen.pricing pr WHERE pr.provider = _cost_cents.provider AND pr.model = _cost_cents.model);

-- The model a provider uses now.
CREATE FUNCTION hagen._model(provider text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE provider
		WHEN 'fal' THEN hagen._setting('hagen.fal_video_model', 'fal-ai/kling-video/v2.6/pro/image-to-video')
		WHEN 'xai' THEN hagen._setting('hagen.xai_video_model', 'grok-imagine-video')
	END;
-- hagenkit install script, part 50: the pipeline of a project (start,
-- cancel, retry, status) and the generic steps of its jobs.

-- Where a project's files go in the work directory (relative to hagen.work_dir).
CREATE FUNCTION hagen._work_file(project uuid, filename text) RETURNS text
	LANGUAGE sql IMMUTABLE RETURN project::text || '/' || filename;

-- The S3 (path-style) URL of the bucket.
CREATE FUNCTION hagen._s3_bucket_url() RETURNS text
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
CREATE FUNCTION hagen._s3_url(key text) RETURNS text
	LANGUAGE sql STABLE
	RETURN hagen._s3_bucket_url() || '/' || hagen._uri_encode(key, true);

-- The URL recorded for a stored object: its public URL when a public base is
-- configured, else its S3 URL.
CREATE FUNCTION hagen._stored_url(key text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN hagen._setting('hagen.public_url') IS NOT NULL
				THEN hagen.public_url(key) ELSE hagen._s3_url(key) END;

-- Sets a project's progress.  The percent only moves forward while a run lasts.
CREATE FUNCTION hagen._set_progress(project uuid, step text, label text, percent numeric)
	RETURNS void LANGUAGE sql AS $$
	UPDATE hagen.video_project p
	SET progress = jsonb_build_object('step', coalesce(step, p.progress ->> 'step'),
		'label', coalesce(label, p.progress ->> 'label'),
		'percent', greatest(coalesce((p.progress ->> 'percent')::numeric, 0),
							least(100, round(coalesce(percent, 0), 1))))
	WHERE p.id = project;
$$;

-- The project as apps see it.
CREATE FUNCTION hagen.video_status(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
BEGIN
	RETURN jsonb_build_object(
		'project_id', p.id,
		'workspace_id', p.workspace_id,
		'status', p.status,
		'progress', p.progress,
		'provider', p.provider,
		'aspect_ratio', p.aspect_ratio,
		'clip_count', p.clip_count,
		'completed_clips', p.completed_clips,
		'failed_clips', p.failed_clips,
		'clips', coalesce((
			SELECT jsonb_agg(jsonb_build_object(
				'id', c.id, 'sequence_order', c.sequence_order, 'status', c.status,
				'clip_url', c.clip_url, 'transition_type', c.transition_type,
				'transition_status', c.transition_status,
				'transition_clip_url', c.transition_clip_url, 'error', c.error_message)
				ORDER BY c.sequence_order)
			FROM hagen.video_clip c WHERE c.project_id = p.id), '[]'),
		'final_video_url', p.final_video_url,
		'thumbnail_url', p.thumbnail_url,
		'duration', p.duration,
		'estimated_cost_cents', p.estimated_cost_cents,
		'actual_cost_cents', p.actual_cost_cents,
		'error_message', p.error_message,
		'started_at', p.started_at,
		'completed_at', p.completed_at);
END;
$$;

-- The estimated cost of generating what a run still has to generate.
CREATE FUNCTION hagen._estimate_cents(p hagen.video_project) RETURNS integer
	LANGUAGE sql STABLE AS $$
	SELECT (coalesce(sum(c.cost_cents), 0)
		   + coalesce(sum(hagen._cost_cents(p.provider, hagen._model(p.provider),
										c.duration::numeric, p.generate_native_audio))
						  FILTER (WHERE c.status <> 'completed'), 0)
		   + coalesce(sum(hagen._cost_cents(p.provider, hagen._model(p.provider), 5, false))
						  FILTER (WHERE c.transition_type = 'seamless' AND c.has_next), 0))::integer
	FROM (SELECT c.*, lead(c.id) OVER (ORDER BY c.sequence_order) IS NOT NULL AS has_next
		  FROM hagen.video_clip c WHERE c.project_id = p.id) AS c;
$$;

-- Queues a generation job for every clip and seamless transition of a
-- project that is not completed and has no live job.  Returns how many.
CREATE FUNCTION hagen._enqueue_generation(p hagen.video_project) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	c record;
	n integer := 0;
	model text := hagen._model(p.provider);
	time_limit interval := hagen._setting_interval('hagen.clip_timeout', '20 minutes');
	common jsonb;
	first_step text := hagen._first_step(p.provider);
BEGIN
	common := jsonb_build_object('model', model, 'aspect_ratio', p.aspect_ratio,
								 'negative_prompt', hagen._negative_prompt());
	FOR c IN
		SELECT v.*, lead(v.source_image_url) OVER w AS next_source, lead(v.id) OVER w AS next_id
		FROM hagen.video_clip v WHERE v.project_id = p.id
		WINDOW w AS (ORDER BY v.sequence_order)
		ORDER BY v.sequence_order
	LOOP
		IF c.status <> 'completed' THEN
			IF hagen._enqueue(p.id, c.id, 'clip', p.provider, first_step, common || jsonb_build_object(
					'start_image', c.source_image_url,
					'end_image', coalesce(c.end_image_url, c.source_image_url),
					'images', hagen._fal_image_steps(ARRAY[c.source_image_url, c.end_image_url]),
					'prompt', hagen._clip_prompt((SELECT v FROM hagen.video_clip v WHERE v.id = c.id), p),
					'duration', c.duration::integer,
					'audio', p.generate_native_audio,
					'key', hagen.get_video_path(p.workspace_id, p.id, c.id || '.mp4'),
					'file', hagen._work_file(p.id, c.id || '.mp4'),
					'cost_cents', hagen._cost_cents(p.provider, model, c.duration::numeric,
													p.generate_native_audio)),
					'http', time_limit) IS NOT NULL THEN
				n := n + 1;
			END IF;
			UPDATE hagen.video_clip SET status = 'processing', error_message = NULL
			WHERE id = c.id;
		END IF;
		IF c.transition_type = 'seamless' AND c.next_id IS NOT NULL
		   AND c.transition_status IS DISTINCT FROM 'completed' THEN
			IF hagen._enqueue(p.id, c.id, 'transition', p.provider, first_step, common || jsonb_build_object(
					'start_image', coalesce(c.end_image_url, c.source_image_url),
					'end_image', c.next_source,
					'images', hagen._fal_image_steps(ARRAY[coalesce(c.end_image_url, c.source_image_url), c.next_source]),
					'next_clip_id', c.next_id,
					'prompt', hagen._transition_prompt(),
					'duration', 5,
					'audio', false,
					'key', hagen.get_video_path(p.workspace_id, p.id, 'transition_' || c.id || '.mp4'),
					'file', hagen._work_file(p.id, 'transition_' || c.id || '.mp4'),
					'cost_cents', hagen._cost_cents(p.provider, model, 5, false)),
					'http', time_limit) IS NOT NULL THEN
				n := n + 1;
			END IF;
			UPDATE hagen.video_clip SET transition_status = 'processing' WHERE id = c.id;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

-- Checks what a run needs before anything is queued: clips, credentials for
-- the provider and for storage.
CREATE FUNCTION hagen._check_runnable(p hagen.video_project) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM hagen.video_clip c WHERE c.project_id = p.id) THEN
		RAISE EXCEPTION 'video project % has no clips', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add clips with hagen.add_clip() before starting it.';
	END IF;
	IF NOT hagen.provider_configured(p.provider) THEN
		RAISE EXCEPTION 'no API key is configured for provider "%"', p.provider
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = CASE p.provider
					WHEN 'fal' THEN 'Set hagen.fal_key in postgresql.conf (or FAL_KEY in the server''s environment) and reload.'
					ELSE 'Set hagen.xai_key in postgresql.conf (or XAI_API_KEY in the server''s environment) and reload.' END;
	END IF;
	PERFORM hagen._s3_url('probe');
	IF NOT hagen.provider_configured('s3') THEN
		RAISE EXCEPTION 'no storage credentials are configured'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Set hagen.s3_access_key_id and hagen.s3_secret_access_key (or R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY) and reload.';
	END IF;
END;
$$;

-- Starts (or resumes) a run of a locked project: queues what is missing and
-- moves it to generating.  Returns the status with the number of new jobs.
CREATE FUNCTION hagen._begin_run(p hagen.video_project) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	n integer;
BEGIN
	PERFORM hagen._check_runnable(p);
	UPDATE hagen.video_project v
	SET status = 'generating', started_at = now(), completed_at = NULL, error_message = NULL,
		final_video_url = NULL, thumbnail_url = NULL, duration = NULL,
		progress = '{"step": "generating", "label": "Generating clips", "percent": 0}'
	WHERE v.id = p.id
	RETURNING * INTO p;
	n := hagen._enqueue_generation(p);
	UPDATE hagen.video_project v SET estimated_cost_cents = hagen._estimate_cents(p)
	WHERE v.id = p.id;
	PERFORM hagen._log(NULL, p.id, 'info', 'run started', jsonb_build_object('jobs', n));
	PERFORM hagen._advance_project(p.id);
	RETURN hagen.video_status(p.id) || jsonb_build_object('enqueued_jobs', n);
END;
$$;

-- Starts generating a project's video.  Calling it again while it runs
-- changes nothing; it never duplicates work and skips completed clips.
CREATE FUNCTION hagen.start_video(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	CASE p.status
	WHEN 'generating', 'compiling' THEN
		RETURN hagen.video_status(p.id) || '{"enqueued_jobs": 0, "note": "already running"}';
	WHEN 'completed' THEN
		RAISE EXCEPTION 'video project % is already completed', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Its video is at final_video_url; use hagen.retry_video() to re-run failed clips.';
	WHEN 'canceled' THEN
		RAISE EXCEPTION 'video project % was canceled', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Use hagen.retry_video() to resume it; completed clips are kept.';
	ELSE
		RETURN hagen._begin_run(p);
	END CASE;
END;
$$;

-- Re-runs the failed and canceled clips and transitions of a project, then
-- compiles again.  Completed clips are never generated again.
CREATE FUNCTION hagen.retry_video(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	IF p.status IN ('generating', 'compiling') THEN
		RETURN hagen.video_status(p.id) || '{"enqueued_jobs": 0, "note": "already running"}';
	ELSIF p.status = 'pending' THEN
		RAISE EXCEPTION 'video project % has not been started', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Use hagen.start_video() to start it.';
	ELSIF p.status = 'completed'
		  AND NOT EXISTS (SELECT 1 FROM hagen.video_clip c WHERE c.project_id = p.id
						  AND (c.status <> 'completed'
							   OR c.transition_status IN ('failed', 'canceled'))) THEN
		RETURN hagen.video_status(p.id) || '{"enqueued_jobs": 0, "note": "nothing to retry"}';
	END IF;
	UPDATE hagen.video_clip c SET status = 'pending', error_message = NULL
	WHERE c.project_id = p.id AND c.status IN ('failed', 'canceled');
	UPDATE hagen.video_clip c SET transition_status = NULL
	WHERE c.project_id = p.id AND c.transition_status IN ('failed', 'canceled');
	RETURN hagen._begin_run(p);
END;
$$;

-- Stops a project's work: queued jobs are canceled at once, running ones as
-- soon as their current effect returns, and provider requests already made
-- get a cancel request.  Completed clips are kept.
CREATE FUNCTION hagen.cancel_video(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
	j hagen.job;
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	IF p.status = 'completed' THEN
		RAISE EXCEPTION 'video project % is already completed', p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'There is nothing to cancel.';
	ELSIF p.status = 'canceled' THEN
		RETURN hagen.video_status(p.id) || '{"note": "already canceled"}';
	END IF;
	UPDATE hagen.video_project v
	SET status = 'canceled', completed_at = now(),
		progress = jsonb_build_object('step', 'canceled', 'label', 'Canceled',
									  'percent', coalesce((v.progress ->> 'percent')::numeric, 0))
	WHERE v.id = p.id;
	FOR j IN SELECT * FROM hagen.job q WHERE q.project_id = p.id AND q.status = 'queued'
			 AND q.kind <> 'cancel' ORDER BY q.id FOR UPDATE
	LOOP
		PERFORM hagen._cancel_job(j);
	END LOOP;
	UPDATE hagen.job q SET cancel_requested = true
	WHERE q.project_id = p.id AND q.status = 'running' AND q.kind <> 'cancel';
	UPDATE hagen.video_clip c SET status = 'canceled'
	WHERE c.project_id = p.id AND c.status IN ('pending', 'processing');
	UPDATE hagen.video_clip c SET transition_status = 'canceled'
	WHERE c.project_id = p.id AND c.transition_status IN ('pending', 'processing');
	PERFORM hagen._log(NULL, p.id, 'info', 'run canceled');
	RETURN hagen.video_status(p.id);
END;
$$;

-- Records the end of a job on its clip or project and moves the project on.
CREATE FUNCTION hagen._job_finished(j hagen.job) RETURNS void
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
CREATE FUNCTION hagen._job_fraction(j hagen.job) RETURNS numeric
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

-- Moves a generating project on: counts and progress, and once no
-- generation job is live, queues the compile (or fails the project when no
-- clip completed).
CREATE FUNCTION hagen._advance_project(project uuid) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
	n_done integer;
	n_all integer;
	live boolean;
	fraction numeric;
	errors text;
BEGIN
	SELECT * INTO p FROM hagen.video_project WHERE id = project FOR UPDATE;
	IF NOT FOUND OR p.status <> 'generating' THEN
		RETURN;
	END IF;
	UPDATE hagen.video_project v
	SET clip_count = s.n, completed_clips = s.ok, failed_clips = s.bad,
		actual_cost_cents = s.cost
	FROM (SELECT count(*) AS n, count(*) FILTER (WHERE status = 'completed') AS ok,
				 count(*) FILTER (WHERE status IN ('failed', 'canceled')) AS bad,
				 coalesce(sum(cost_cents), 0) AS cost
		  FROM hagen.video_clip WHERE project_id = p.id) AS s
	WHERE v.id = p.id
	RETURNING v.* INTO p;

	SELECT count(*) FILTER (WHERE status NOT IN ('queued', 'running')), count(*),
		   bool_or(status IN ('queued', 'running')), avg(hagen._job_fraction(job))
	INTO n_done, n_all, live, fraction
	FROM hagen.job WHERE project_id = p.id AND kind IN ('clip', 'transition')
	  AND created_at >= p.started_at;
	IF coalesce(live, false) THEN
		PERFORM hagen._set_progress(p.id, 'generating',
			format('Generating clips (%s of %s done)', n_done, n_all), 85.0 * fraction);
		RETURN;
	END IF;

	IF p.completed_clips = 0 THEN
		SELECT string_agg(format('clip %s: %s', c.sequence_order,
								 coalesce(c.error_message, c.status)), '; ' ORDER BY c.sequence_order)
		INTO errors FROM hagen.video_clip c WHERE c.project_id = p.id;
		UPDATE hagen.video_project v
		SET status = 'failed', completed_at = now(),
			error_message = format('all %s clips failed: %s', p.clip_count, errors),
			progress = jsonb_build_object('step', 'failed', 'label', 'Failed',
				'percent', coalesce((v.progress ->> 'percent')::numeric, 0))
		WHERE v.id = p.id;
		PERFORM hagen._log(NULL, p.id, 'error', 'run failed: no clip completed');
		RETURN;
	END IF;

	UPDATE hagen.video_project v SET status = 'compiling' WHERE v.id = p.id;
	PERFORM hagen._set_progress(p.id, 'compiling', 'Compiling the video', 85);
	PERFORM hagen._enqueue(p.id, NULL, 'compile', NULL, 'compile', '{}', 'compile',
						   hagen._setting_interval('hagen.compile_timeout', '30 minutes') * 2);
END;
$$;
-- hagenkit install script, part 55: storage (S3 / Cloudflare R2) helpers
-- that SQL users call directly.

CREATE FUNCTION hagen._presign(url text, method text, expires_s integer, at timestamptz)
	RETURNS text LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'hagen_presign';

CREATE FUNCTION hagen._sigv4_selftest(OUT vector text, OUT expected text, OUT computed text,
									  OUT ok boolean)
	RETURNS SETOF record LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hagen_sigv4_selftest';
COMMENT ON FUNCTION hagen._sigv4_selftest() IS
	'Checks the SigV4 signer against the AWS S3 documentation examples.';

-- Checks a storage key: relative, no "." or ".." segments, no control
-- characters, at most 1024 bytes.
CREATE FUNCTION hagen._check_key(key text) RETURNS void
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF key IS NULL OR key = '' OR key ~ '^/' OR key ~ '(^|/)\.\.?(/|$)' OR key ~ '[[:cntrl:]]'
	   OR key ~ '//' OR octet_length(key) > 1024 THEN
		RAISE EXCEPTION 'invalid storage key "%"', coalesce(left(key, 200), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A key is a relative path of at most 1024 bytes such as "ws/videos/<project>/final.mp4", without a leading "/", empty segments or "." and ".." segments.';
	END IF;
END;
$$;

-- A query-string presigned URL (AWS SigV4) for an object of the bucket:
-- anyone holding it may GET / PUT / HEAD / DELETE that one key until it
-- expires.  at is when the validity starts (now by default).
CREATE FUNCTION hagen.presign_url(key text, method text DEFAULT 'GET',
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
-- hagenkit install script, part 56: reading S3's answers (XML) and
-- deciding what an S3 error means.
--
-- S3 and R2 answer in small, machine-written XML without CDATA or
-- namespace prefixes, so the few elements we need are read with regular
-- expressions (no libxml needed) and their entities decoded.

-- Decodes XML character references (&amp; &lt; &gt; &quot; &apos; &#N; &#xH;)
-- left to right, so "&amp;lt;" stays "&lt;".
CREATE FUNCTION hagen._xml_unescape(value text) RETURNS text
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
CREATE FUNCTION hagen._xml_escape(value text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	RETURN replace(replace(replace(replace(replace(value, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
						   '"', '&quot;'), '''', '&apos;');

-- The values of every <tag>value</tag> of an XML text, in document order
-- (an empty array when there is none).
CREATE FUNCTION hagen._xml_values(body text, tag text) RETURNS text[]
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (
		SELECT coalesce(array_agg(hagen._xml_unescape(m[1]) ORDER BY n), '{}')
		FROM regexp_matches(coalesce(body, ''), '<' || tag || '>([^<]*)</' || tag || '>', 'g')
			 WITH ORDINALITY AS x(m, n)
	);

-- The value of the first <tag> of an XML text, or NULL.
CREATE FUNCTION hagen._xml_value(body text, tag text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (hagen._xml_values(body, tag))[1];

-- "Code: Message" of an S3 error answer (<Error><Code>…</Code><Message>…),
-- or NULL when the answer is not one.
CREATE FUNCTION hagen._s3_error(o jsonb) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN o ->> 'body_text' ~ '<Error>' THEN
		nullif(concat_ws(': ', hagen._xml_value(o ->> 'body_text', 'Code'),
						 hagen._xml_value(o ->> 'body_text', 'Message')), '') END;

-- The decision for an S3 request that did not succeed: transport errors,
-- 429, 5xx and the codes S3 asks clients to retry (SlowDown, InternalError,
-- RequestTimeout…) are retried with back-off (at least Retry-After); any
-- other answer is final.  The error names what was being done, the HTTP
-- status and S3's own Code and Message.
CREATE FUNCTION hagen._s3_failure(o jsonb, what text) RETURNS jsonb
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
-- hagenkit install script, part 57: storing a work file in the bucket,
-- with one streamed PUT or, from hagen.s3_multipart_threshold on, a
-- multipart upload.
--
-- The steps belong to the job whose file it is (a clip or a transition);
-- its state names the file, its size and the key ("file", "bytes", "key",
-- optionally "content_type"):
--   store            one PUT of the whole file
--   upload_create    POST ?uploads                      -> upload_id, the plan
--   upload_parts     waits while its parts are sent     -> an ETag per part
--   upload_complete  POST ?uploadId= with the parts' ETags
--   upload_check     HEAD, when a completion's answer was lost
-- Each part is a job of its own (kind upload_part, parent_id the job above):
-- parts travel in parallel through the dispatcher like any other effect,
-- are retried one by one, and a part whose answer was recorded is never
-- sent again, whatever restarts.  The parent's state keeps the upload id
-- and every part's ETag.  A parent that fails or is canceled aborts the
-- upload (a provider cancel job of provider "s3").

CREATE FUNCTION hagen._multipart_threshold() RETURNS bigint
	LANGUAGE sql STABLE
	RETURN pg_size_bytes(hagen._setting('hagen.s3_multipart_threshold', '64MB'));

-- How often a parent waiting for its parts looks at them on its own (its
-- parts wake it when they end; this only covers a wake-up that was lost).
CREATE FUNCTION hagen._upload_watchdog_ms() RETURNS integer
	LANGUAGE sql IMMUTABLE RETURN 30000;

-- The parts of a multipart upload of size bytes: equal parts of
-- hagen.s3_part_size (or part_size), the last one no larger; parts are at
-- least 5 MiB and at most 5 GiB - 5 MiB (R2's limit), at most 10,000 of them,
-- so a file that would need more gets larger parts (in whole MiB).  The
-- largest object is 5 TiB - 5 GiB (R2's limit).
CREATE FUNCTION hagen._multipart_plan(size bigint, part_size bigint DEFAULT NULL,
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
CREATE FUNCTION hagen._store_step(bytes bigint) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN bytes >= hagen._multipart_threshold() THEN 'upload_create' ELSE 'store' END;

-- The query string naming a multipart upload.
CREATE FUNCTION hagen._upload_query(upload_id text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT
	RETURN 'uploadId=' || hagen._uri_encode(upload_id, false);

-- The body of CompleteMultipartUpload: every part's number and ETag, in order.
CREATE FUNCTION hagen._complete_xml(parts jsonb, part_count integer) RETURNS text
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
CREATE FUNCTION hagen._upload_effect(j hagen.job) RETURNS jsonb
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
CREATE FUNCTION hagen._upload_interpret(j hagen.job, o jsonb) RETURNS jsonb
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
CREATE FUNCTION hagen._upload_schedule(parent bigint) RETURNS integer
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
CREATE FUNCTION hagen._upload_parts_check(j hagen.job) RETURNS jsonb
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
CREATE FUNCTION hagen._upload_part_effect(j hagen.job) RETURNS jsonb
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
CREATE FUNCTION hagen._upload_part_interpret(j hagen.job, o jsonb) RETURNS jsonb
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
CREATE FUNCTION hagen._upload_part_finished(j hagen.job) RETURNS void
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
CREATE FUNCTION hagen._upload_abandon(j hagen.job) RETURNS void
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
CREATE FUNCTION hagen._upload_abort_effect(key text, upload_id text) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN jsonb_build_object('type', 'http', 'method', 'DELETE', 'auth', 's3',
		'url', hagen._s3_url(key) || '?' || hagen._upload_query(upload_id), 'timeout_ms', 60000);
-- hagenkit install script, part 58: deleting all of a project's objects
-- from the bucket (the prefix {workspace_id}/videos/{project_id}/).
--
-- A purge job belongs to no project (its project_id is NULL), so it
-- outlives the row: deleting a project schedules one.  Steps:
--   abort   DELETE ?uploadId= for each multipart upload the project left open
--   list    ListObjectsV2 of the prefix, 1000 keys a page, with continuation
--   delete  DeleteObjects of that page (Content-MD5, quiet), then the next page
-- Its state counts what was deleted and what S3 refused to delete.

-- The body of a DeleteObjects request for some keys (at most 1000).
CREATE FUNCTION hagen._delete_xml(keys jsonb) RETURNS text
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
CREATE FUNCTION hagen._schedule_purge(workspace text, project uuid, aborts jsonb DEFAULT '[]',
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
CREATE FUNCTION hagen.delete_project_objects(project_id uuid, workspace_id text DEFAULT NULL)
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
CREATE FUNCTION hagen._project_deleted() RETURNS trigger
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
CREATE FUNCTION hagen._purge_effect(j hagen.job) RETURNS jsonb
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
CREATE FUNCTION hagen._purge_interpret(j hagen.job, o jsonb) RETURNS jsonb
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
CREATE FUNCTION hagen._purge_done(j hagen.job) RETURNS jsonb
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
-- hagenkit install script, part 60: the compile job.

-- The segments of the final video in order: completed clips by
-- sequence_order, each followed by its seamless transition when that
-- completed and leads into the very next clip; anything else is a cut.
CREATE FUNCTION hagen._compile_segments(p hagen.video_project) RETURNS jsonb
	LANGUAGE sql STABLE AS $$
	WITH ordered AS (
		SELECT c.*, lead(c.id) OVER (ORDER BY c.sequence_order) AS next_id
		FROM hagen.video_clip c WHERE c.project_id = p.id
	), kept AS (
		SELECT o.*, lead(o.id) OVER (ORDER BY o.sequence_order) AS next_kept
		FROM ordered o WHERE o.status = 'completed'
	), segs AS (
		SELECT k.sequence_order, 0 AS part, jsonb_build_object(
				'kind', 'clip', 'clip_id', k.id,
				'label', coalesce(k.room_label, k.room_type, 'clip ' || k.sequence_order),
				'key', hagen.get_video_path(p.workspace_id, p.id, k.id || '.mp4'),
				'file', hagen._work_file(p.id, k.id || '.mp4')) AS seg
		FROM kept k
		UNION ALL
		SELECT k.sequence_order, 1, jsonb_build_object(
				'kind', 'transition', 'clip_id', k.id,
				'label', 'transition after ' || coalesce(k.room_label, k.room_type, 'clip ' || k.sequence_order),
				'key', hagen.get_video_path(p.workspace_id, p.id, 'transition_' || k.id || '.mp4'),
				'file', hagen._work_file(p.id, 'transition_' || k.id || '.mp4'))
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
-- hagenkit install script, part 70: clip and transition jobs.
--
-- Steps: submit -> poll -> result (the provider's adapter) -> download ->
-- store (generic).  The job's state holds its inputs, fixed when it was
-- queued, and what each step learnt (request id and URLs, the video URL,
-- the local file).

CREATE FUNCTION hagen._max_download_bytes() RETURNS bigint
	LANGUAGE sql STABLE
	RETURN pg_size_bytes(hagen._setting('hagen.max_download_bytes', '1GB'));

-- The effect of the current step of a clip or transition job.
CREATE FUNCTION hagen._generation_effect(j hagen.job) RETURNS jsonb
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
CREATE FUNCTION hagen._generation_interpret(j hagen.job, o jsonb) RETURNS jsonb
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
CREATE FUNCTION hagen._provider_cancel_effect(j hagen.job) RETURNS jsonb
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

CREATE FUNCTION hagen._provider_cancel_interpret(j hagen.job, o jsonb) RETURNS jsonb
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
-- hagenkit install script, part 80: the Fal.ai adapter (Kling image-to-video
-- through the Fal queue API).
--
-- submit: POST {hagen.fal_queue_url}/{model} -> request_id and its URLs
-- poll:   GET status_url (202 while IN_QUEUE / IN_PROGRESS, 200 COMPLETED)
-- result: GET response_url -> {"video": {"url": ...}} or the model's error
-- Fal has no idempotency key: a submit is retried only when it certainly did
-- not arrive (429, 503, or no connection), so nothing is ever paid twice.

-- The base URL of a request of a model: status, result and cancel drop the
-- model's sub-path (owner/app only; workflows/ and comfy/ keep 3 segments).
CREATE FUNCTION hagen._fal_request_url(model text, request_id text) RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	parts text[] := string_to_array(model, '/');
	app text;
BEGIN
	IF parts[1] IN ('workflows', 'comfy') THEN
		app := array_to_string(parts[1:3], '/');
	ELSE
		app := array_to_string(parts[1:2], '/');
	END IF;
	RETURN rtrim(hagen._setting('hagen.fal_queue_url', 'https://queue.fal.run'), '/')
		|| '/' || app || '/requests/' || hagen._uri_encode(request_id, false);
END;
$$;

-- How long to wait before the next poll of a request: hagen.poll_interval,
-- doubling every 10 polls up to 8 times that, so that a generation of
-- several minutes is not polled hundreds of times.
CREATE FUNCTION hagen._poll_delay_ms(j hagen.job) RETURNS bigint
	LANGUAGE sql STABLE
	RETURN (extract(epoch FROM hagen._setting_interval('hagen.poll_interval', '2 seconds')) * 1000
			* least(power(2, coalesce((j.state ->> 'polls')::integer, 0) / 10), 8))::bigint;

-- The model input: field names follow the model version (v2.1 uses
-- image_url / tail_image_url / cfg_scale; v2.6 and later start_image_url /
-- end_image_url / generate_audio, always sent explicitly).
CREATE FUNCTION hagen._fal_input(s jsonb) RETURNS jsonb
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF s ->> 'model' ~ '/v(1|2\.0|2\.1)/' THEN
		RETURN jsonb_strip_nulls(jsonb_build_object(
			'image_url', s ->> 'start_image', 'tail_image_url', s ->> 'end_image',
			'prompt', s ->> 'prompt', 'duration', s ->> 'duration',
			'negative_prompt', s ->> 'negative_prompt', 'cfg_scale', 0.5));
	END IF;
	RETURN jsonb_strip_nulls(jsonb_build_object(
		'start_image_url', s ->> 'start_image', 'end_image_url', s ->> 'end_image',
		'prompt', s ->> 'prompt', 'duration', s ->> 'duration',
		'negative_prompt', s ->> 'negative_prompt'))
		|| jsonb_build_object('generate_audio', coalesce((s ->> 'audio')::boolean, false));
END;
$$;

CREATE FUNCTION hagen._fal_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := hagen._fal_request_url(j.state ->> 'model', coalesce(j.request_id, ''));
	url text;
BEGIN
	IF j.step LIKE 'image\_%' THEN
		RETURN hagen._fal_upload_effect(j);
	END IF;
	CASE j.step
	WHEN 'submit' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'POST', 'auth', 'fal',
			'url', rtrim(hagen._setting('hagen.fal_queue_url', 'https://queue.fal.run'), '/')
				   || '/' || (j.state ->> 'model'),
			'headers', '{"content-type": "application/json", "accept": "application/json"}',
			'body', hagen._fal_input(j.state), 'timeout_ms', 60000);
	WHEN 'poll' THEN
		url := coalesce(j.state ->> 'status_url', base || '/status');
		RETURN jsonb_build_object('type', 'http', 'method', 'GET', 'auth', 'fal',
			'url', url || CASE WHEN url ~ '\?' THEN '&' ELSE '?' END || 'logs=0',
			'headers', '{"accept": "application/json"}', 'timeout_ms', 30000);
	WHEN 'result' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'GET', 'auth', 'fal',
			'url', coalesce(j.state ->> 'response_url', base),
			'headers', '{"accept": "application/json"}', 'timeout_ms', 60000);
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai step "%"', j.step;
END;
$$;

-- Reads Fal.ai's answers.
CREATE FUNCTION hagen._fal_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	b jsonb := o -> 'body';
	req text;
	poll_ms bigint := hagen._poll_delay_ms(j);
	msg text := hagen._error_text(o);
BEGIN
	IF j.step LIKE 'image\_%' THEN
		RETURN hagen._fal_upload_interpret(j, o);
	END IF;
	CASE j.step
	WHEN 'submit' THEN
		req := coalesce(CASE WHEN jsonb_typeof(b -> 'request_id') = 'string' THEN b ->> 'request_id' END,
						o -> 'headers' ->> 'x-fal-request-id');
		IF status BETWEEN 200 AND 299 AND req IS NOT NULL THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'request_id', req,
				'delay_ms', poll_ms,
				'log', format('submitted to Fal.ai as request %s', req),
				'state', jsonb_strip_nulls(jsonb_build_object('request_id', req,
					'status_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'status_url' END,
					'response_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'response_url' END,
					'cancel_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'cancel_url' END)));
		END IF;
		-- Certainly not received: safe to send again.
		IF status IN (429, 503) OR (status = 0 AND o ->> 'phase' = 'connect') THEN
			RETURN hagen._transient(o, 'submit to Fal.ai');
		END IF;
		IF status IN (400, 401, 403, 404, 422) OR (status BETWEEN 400 AND 499) THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai refused the request (HTTP %s): %s', status, coalesce(msg, 'no detail')));
		END IF;
		-- The request may have arrived (and be billed): never send it twice
		-- on our own.
		IF coalesce(hagen._setting('hagen.resubmit_unconfirmed', 'off')::boolean, false) THEN
			RETURN jsonb_build_object('action', 'retry', 'unconfirmed', true,
				'error', format('submit to Fal.ai unconfirmed (%s); sending it again as configured',
								coalesce(msg, 'no answer')));
		END IF;
		RETURN jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to Fal.ai unconfirmed: %s. The request may have reached Fal.ai and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
								 ELSE format('HTTP %s%s', status, coalesce(': ' || msg, '')) END));
	WHEN 'poll' THEN
		IF status = 202 OR (status = 200 AND jsonb_typeof(b) = 'object'
							AND b ->> 'status' IN ('IN_QUEUE', 'IN_PROGRESS')) THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'delay_ms', poll_ms,
				'state', jsonb_strip_nulls(jsonb_build_object(
					'provider_status', b ->> 'status', 'queue_position', b -> 'queue_position',
					'polls', coalesce((j.state ->> 'polls')::integer, 0) + 1)));
		ELSIF status = 200 THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'result',
				'state', jsonb_strip_nulls(jsonb_build_object('provider_status', 'COMPLETED',
					'provider_error', b ->> 'error', 'provider_error_type', b ->> 'error_type')));
		ELSIF status = 404 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai does not know request %s (HTTP 404)', j.request_id));
		END IF;
		RETURN coalesce(hagen._transient(o, 'Fal.ai status'),
			jsonb_build_object('action', 'fail',
				'error', format('Fal.ai status of request %s failed (HTTP %s): %s',
								j.request_id, status, coalesce(msg, 'no detail'))));
	WHEN 'result' THEN
		IF status BETWEEN 200 AND 299 THEN
			IF jsonb_typeof(b) = 'object' AND jsonb_typeof(b -> 'video') = 'object'
			   AND jsonb_typeof(b -> 'video' -> 'url') = 'string' THEN
				RETURN jsonb_build_object('action', 'advance', 'step', 'download',
					'state', jsonb_build_object('video_url', b -> 'video' ->> 'url'));
			ELSIF b IS NULL THEN
				RETURN jsonb_build_object('action', 'retry',
					'error', 'Fal.ai result is not valid JSON: ' || coalesce(left(o ->> 'body_text', 100), ''));
			END IF;
			RETURN jsonb_build_object('action', 'fail',
				'error', 'Fal.ai result has no video.url: ' || left(b::text, 300));
		ELSIF status = 400 AND msg ~* 'in progress' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'delay_ms', poll_ms);
		ELSIF status BETWEEN 400 AND 499 AND status <> 429 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai could not generate the video (HTTP %s): %s', status,
								coalesce(msg, j.state ->> 'provider_error', 'no detail')));
		ELSIF j.state ? 'provider_error' AND status >= 500 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai could not generate the video: %s (%s)',
								coalesce(msg, j.state ->> 'provider_error'),
								coalesce(j.state ->> 'provider_error_type', 'HTTP ' || status)));
		END IF;
		RETURN hagen._transient(o, 'Fal.ai result');
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai step "%"', j.step;
END;
$$;
-- hagenkit install script, part 81: the xAI adapter (grok-imagine-video).
--
-- submit: POST {hagen.xai_url}/videos/generations -> {"request_id"}
-- poll:   GET {hagen.xai_url}/videos/{request_id}: 202 pending (maybe with an
--         empty body), 200 with status done / failed / expired; the older
--         shape has no status and is done when video.url is present.
-- xAI has no cancel endpoint: a canceled request is left to finish.

CREATE FUNCTION hagen._xai_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := rtrim(hagen._setting('hagen.xai_url', 'https://api.x.ai/v1'), '/');
BEGIN
	CASE j.step
	WHEN 'submit' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'POST', 'auth', 'xai',
			'url', base || '/videos/generations',
			'headers', '{"content-type": "application/json", "accept": "application/json"}',
			'body', jsonb_build_object('model', j.state ->> 'model', 'prompt', j.state ->> 'prompt',
				'image', jsonb_build_object('url', j.state ->> 'start_image'),
				'duration', (j.state ->> 'duration')::integer,
				'aspect_ratio', j.state ->> 'aspect_ratio',
				'resolution', hagen._setting('hagen.xai_resolution', '720p')),
			'timeout_ms', 60000);
	WHEN 'poll', 'result' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'GET', 'auth', 'xai',
			'url', base || '/videos/' || hagen._uri_encode(j.request_id, false),
			'headers', '{"accept": "application/json"}', 'timeout_ms', 30000);
	END CASE;
	RAISE EXCEPTION 'unknown xAI step "%"', j.step;
END;
$$;

CREATE FUNCTION hagen._xai_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	b jsonb := o -> 'body';
	st text;
	poll_ms bigint := hagen._poll_delay_ms(j);
	msg text := hagen._error_text(o);
BEGIN
	IF j.step = 'submit' THEN
		IF status = 200 AND jsonb_typeof(b -> 'request_id') = 'string' AND b ->> 'request_id' <> '' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'delay_ms', poll_ms,
				'request_id', b ->> 'request_id',
				'log', format('submitted to xAI as request %s', b ->> 'request_id'),
				'state', jsonb_build_object('request_id', b ->> 'request_id'));
		ELSIF status IN (429, 503) OR (status = 0 AND o ->> 'phase' = 'connect') THEN
			RETURN hagen._transient(o, 'submit to xAI');
		ELSIF status BETWEEN 400 AND 499 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('xAI refused the request (HTTP %s): %s', status, coalesce(msg, 'no detail')));
		END IF;
		RETURN jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to xAI unconfirmed: %s. The request may have reached xAI and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
								 ELSE format('HTTP %s%s', status, coalesce(': ' || msg, '')) END));
	END IF;

	-- poll (and result, which is the same request)
	IF status = 202 THEN
		RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'delay_ms', poll_ms,
			'state', jsonb_strip_nulls(jsonb_build_object('provider_status', 'pending',
				'provider_progress', b -> 'progress',
				'polls', coalesce((j.state ->> 'polls')::integer, 0) + 1)));
	ELSIF status = 404 THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('xAI does not know request %s (HTTP 404)', j.request_id));
	ELSIF status <> 200 THEN
		RETURN coalesce(hagen._transient(o, 'xAI status'),
			jsonb_build_object('action', 'fail',
				'error', format('xAI status of request %s failed (HTTP %s): %s', j.request_id, status,
								coalesce(msg, 'no detail'))));
	ELSIF jsonb_typeof(b) <> 'object' THEN
		RETURN jsonb_build_object('action', 'retry',
			'error', 'xAI answered with a body that is not a JSON object');
	END IF;
	st := coalesce(b ->> 'status', CASE WHEN b -> 'video' ->> 'url' <> '' THEN 'done' END, 'pending');
	IF st = 'done' THEN
		IF (b -> 'video' ->> 'respect_moderation')::boolean IS FALSE THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', 'xAI blocked the video by content moderation');
		ELSIF coalesce(b -> 'video' ->> 'url', '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error', 'xAI result has no video.url');
		END IF;
		RETURN jsonb_build_object('action', 'advance', 'step', 'download',
			'state', jsonb_build_object('video_url', b -> 'video' ->> 'url',
										'provider_duration', b -> 'video' -> 'duration'));
	ELSIF st = 'failed' THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('xAI could not generate the video (%s): %s',
							coalesce(b -> 'error' ->> 'code', 'failed'),
							coalesce(b -> 'error' ->> 'message', 'no detail')));
	ELSIF st = 'expired' THEN
		RETURN jsonb_build_object('action', 'fail', 'error', format('xAI request %s expired', j.request_id));
	END IF;
	RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'delay_ms', poll_ms,
		'state', jsonb_build_object('provider_status', st));
END;
$$;

-- xAI offers no way to cancel a request: the cancel job only records that.
CREATE FUNCTION hagen._xai_cancel_effect(j hagen.job) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN jsonb_build_object('type', 'noop', 'reason', 'xAI has no cancel endpoint');
-- hagenkit install script, part 82: making source images reachable by
-- Fal.ai through Fal storage, as the app hagenkit replaces did.
--
-- For each distinct image of a job (start, end):
--   image_fetch:    GET the image (network guard, 10 MB, must be an image)
--   image_initiate: POST {hagen.fal_rest_url}/storage/upload/initiate -> upload_url, file_url
--   image_put:      PUT the bytes to upload_url (pre-signed: no Authorization)
-- then the job's start and end images become the file_urls and it submits.
-- hagen.fal_image_mode = 'url' passes the URLs through instead.

CREATE FUNCTION hagen._fal_image_steps(images text[]) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN (SELECT jsonb_agg(jsonb_build_object('url', u) ORDER BY first)
			FROM (SELECT u, min(o) AS first FROM unnest(images) WITH ORDINALITY AS x(u, o)
				  WHERE u IS NOT NULL GROUP BY u) AS distinct_images);

-- The first step of a generation job on a provider.
CREATE FUNCTION hagen._first_step(provider text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN provider = 'fal' AND hagen._setting('hagen.fal_image_mode', 'upload') = 'upload'
				THEN 'image_fetch' ELSE 'submit' END;

CREATE FUNCTION hagen._fal_upload_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	img jsonb := j.state -> 'images' -> i;
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'GET', 'url', img ->> 'url',
			'auth', 'none', 'guard', true, 'follow_redirects', true,
			'save_to', hagen._work_file(j.project_id, format('images/%s_%s', j.id, i)),
			'max_bytes', 10 * 1024 * 1024, 'timeout_ms', 120000);
	WHEN 'image_initiate' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'POST', 'auth', 'fal',
			'url', rtrim(hagen._setting('hagen.fal_rest_url', 'https://rest.fal.ai'), '/')
				   || '/storage/upload/initiate?storage_type=fal-cdn-v3',
			'headers', '{"content-type": "application/json", "accept": "application/json"}',
			'body', jsonb_build_object('content_type', img ->> 'content_type',
									   'file_name', img ->> 'file_name'),
			'timeout_ms', 30000);
	WHEN 'image_put' THEN
		RETURN jsonb_build_object('type', 'http', 'method', 'PUT', 'url', img ->> 'upload_url',
			'auth', 'none', 'guard', true, 'body_file', img ->> 'file',
			'headers', jsonb_build_object('content-type', img ->> 'content_type'),
			'timeout_ms', 120000);
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai upload step "%"', j.step;
END;
$$;

CREATE FUNCTION hagen._fal_upload_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	images jsonb := j.state -> 'images';
	img jsonb := images -> i;
	b jsonb := o -> 'body';
	ctype text;
	name text;
	start_url text;
	end_url text;
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		IF o ->> 'error_kind' = 'guard' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('refused to fetch image %s: %s', img ->> 'url', o ->> 'error'));
		ELSIF o ->> 'error_kind' = 'too_large' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('image %s is larger than 10 MB, the most Kling accepts', img ->> 'url'));
		ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			ctype := lower(split_part(coalesce(o -> 'headers' ->> 'content-type', ''), ';', 1));
			IF ctype NOT IN ('image/jpeg', 'image/jpg', 'image/png', 'image/webp', 'image/gif', 'image/avif') THEN
				RETURN jsonb_build_object('action', 'fail',
					'error', format('%s is not a JPEG, PNG, WebP, GIF or AVIF image (Content-Type "%s")',
									img ->> 'url', ctype));
			END IF;
			name := coalesce(nullif(regexp_replace(split_part(split_part(img ->> 'url', '?', 1), '#', 1),
												   '^.*/', ''), ''), 'image');
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_initiate',
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('file', o ->> 'file', 'content_type', ctype,
											  'file_name', left(name, 200)))));
		END IF;
		RETURN coalesce(hagen._transient(o, format('fetch of image %s', img ->> 'url')),
			jsonb_build_object('action', 'fail', 'error',
				format('could not fetch image %s: HTTP %s', img ->> 'url', status)));
	WHEN 'image_initiate' THEN
		IF status BETWEEN 200 AND 299 AND jsonb_typeof(b -> 'upload_url') = 'string'
		   AND jsonb_typeof(b -> 'file_url') = 'string' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_put',
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('upload_url', b ->> 'upload_url', 'file_url', b ->> 'file_url'))));
		ELSIF status BETWEEN 200 AND 299 THEN
			RETURN jsonb_build_object('action', 'retry',
				'error', 'Fal.ai storage answered without upload_url and file_url');
		ELSIF status BETWEEN 400 AND 499 AND status <> 429 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai storage refused the upload (HTTP %s): %s', status,
								coalesce(hagen._error_text(o), 'no detail')));
		END IF;
		RETURN hagen._transient(o, 'Fal.ai storage initiate');
	WHEN 'image_put' THEN
		IF status BETWEEN 200 AND 299 THEN
			IF i + 1 < jsonb_array_length(images) THEN
				RETURN jsonb_build_object('action', 'advance', 'step', 'image_fetch',
					'state', jsonb_build_object('image_index', i + 1));
			END IF;
			SELECT x ->> 'file_url' INTO start_url FROM jsonb_array_elements(images) x
			WHERE x ->> 'url' = j.state ->> 'start_image';
			SELECT x ->> 'file_url' INTO end_url FROM jsonb_array_elements(images) x
			WHERE x ->> 'url' = j.state ->> 'end_image';
			RETURN jsonb_build_object('action', 'advance', 'step', 'submit',
				'log', format('%s image(s) uploaded to Fal storage', jsonb_array_length(images)),
				'state', jsonb_build_object('source_start_image', j.state ->> 'start_image',
											'source_end_image', j.state ->> 'end_image',
											'start_image', start_url, 'end_image', end_url));
		ELSIF status = 403 THEN
			-- The signed upload URL expired or was used: ask for a new one.
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_initiate', 'keep_attempts', true,
				'log', 'Fal storage upload URL refused (HTTP 403); asking for a new one');
		END IF;
		RETURN coalesce(hagen._transient(o, 'upload to Fal storage'),
			jsonb_build_object('action', 'fail', 'error',
				format('upload to Fal storage failed: HTTP %s%s', status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai upload step "%"', j.step;
END;
$$;
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
-- hagenkit install script, part 90: roles and privileges.
--
-- Two roles, for the DBA to grant:
--   hagen_user      apps: the public API (create, start, cancel, retry,
--                   status, URLs) and reading their own projects and clips
--   hagen_operator  operators: also every table and view, history purges,
--                   prices, room prompts and the workspace/role map
-- The API functions run as the extension's owner (SECURITY DEFINER) with a
-- fixed search_path, so callers need no table privileges.  Internal tables
-- and the worker protocol are granted to no one.  Projects and clips have
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
ALTER FUNCTION hagen.delete_project_objects(uuid, text)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;

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

GRANT SELECT ON ALL TABLES IN SCHEMA hagen TO hagen_operator;
GRANT INSERT, UPDATE, DELETE ON hagen.pricing, hagen.room_prompt, hagen.workspace_role TO hagen_operator;
GRANT EXECUTE ON FUNCTION hagen.purge_history(interval) TO hagen_operator;
-- hagenkit install script, part 95: what pg_dump keeps.
--
-- The rows of an extension's tables are not dumped unless the extension
-- says so.  Projects, clips, music, jobs and their logs are user data: a
-- dump and restore of the database must keep them, and the counters behind
-- their ids.  pricing and room_prompt hold seeded rows that CREATE EXTENSION
-- puts back; operators who edit them should keep their edits in their own
-- migrations.
SELECT pg_catalog.pg_extension_config_dump('hagen.music_track', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.video_project', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.video_clip', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.job', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.job_log', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.lease_token_seq', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('hagen.job', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('hagen.job_log', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('hagen.workspace_role', '');
