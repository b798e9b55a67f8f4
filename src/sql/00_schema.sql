-- hagenkit install script, part 00: tables.
--
-- The Makefile concatenates src/sql/*.sql in name order into the versioned
-- install script sql/hagenkit--<version>.sql.  Nothing here is edited after
-- a version is released; changes go into an upgrade script.

\echo Use "CREATE EXTENSION hagenkit" to load this file. \quit

-- A music track that projects may lay under their clips: a workspace's own,
-- or shared by all.
CREATE TABLE hagen.music_track (
	id			uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	name		text NOT NULL CHECK (name <> ''),
	audio_url	text NOT NULL,
	category	text,
	mood		text,
	duration	real CHECK (duration IS NULL OR duration > 0),
	created_at	timestamptz NOT NULL DEFAULT now(),
	-- The workspace whose track it is; NULL: shared with every workspace.
	workspace_id	text CHECK (workspace_id <> '')
);
CREATE INDEX music_track_workspace_idx ON hagen.music_track (workspace_id);

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
	-- The clock, not the transaction's start: projects made in one
	-- transaction still list in order (list_projects pages by created_at).
	created_at				timestamptz NOT NULL DEFAULT clock_timestamp(),
	updated_at				timestamptz NOT NULL DEFAULT now(),
	started_at				timestamptz,
	completed_at			timestamptz,
	-- Seconds of crossfade at every cut between clips (0: hard cuts).  Not
	-- into or out of a seamless transition, which already joins its clips.
	crossfade				real NOT NULL DEFAULT 0
		CHECK (crossfade = 0 OR crossfade BETWEEN 0.1 AND 2),
	-- The app's id of the property the video shows.
	property_id				text,
	-- How a photo is fitted to the aspect ratio before it goes to the
	-- provider: crop (the centre, filling the frame), pad (all of it, on
	-- black) or none (sent as it is: the clip takes the photo's shape).
	framing					text NOT NULL DEFAULT 'crop' CHECK (framing IN ('crop', 'pad', 'none')),
	-- The current run's generation jobs, how many of them ended, and the
	-- sum of how far each has come (0 to 1): the progress of the run, kept
	-- up to date step by step instead of being recounted from the jobs.
	run_jobs				integer NOT NULL DEFAULT 0,
	run_jobs_done			integer NOT NULL DEFAULT 0,
	run_fraction			numeric NOT NULL DEFAULT 0
);
CREATE INDEX video_project_workspace_idx ON hagen.video_project (workspace_id, created_at);
CREATE INDEX video_project_property_idx ON hagen.video_project (workspace_id, property_id)
	WHERE property_id IS NOT NULL;
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

-- A job: one unit of pipeline work (a clip, a transition, a compile, a
-- provider-side cancel, a part of a multipart upload, the purge of a
-- project's objects, the fetch of an input of a compile, the removal of a
-- project's work files).  It advances through persisted steps; each claim of
-- a job hands one effect to a worker under a lease identified by a token.
-- A purge and a cleanup belong to no project (they outlive the project
-- they clean up), nor does the provider cancel of a request of a deleted
-- project; a part has its upload's job as parent, a fetch its compile.
CREATE SEQUENCE hagen.lease_token_seq;
CREATE TABLE hagen.job (
	id					bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	project_id			uuid REFERENCES hagen.video_project (id) ON DELETE CASCADE,
	clip_id				uuid REFERENCES hagen.video_clip (id) ON DELETE CASCADE,
	kind				text NOT NULL CHECK (kind IN ('clip', 'transition', 'compile', 'cancel',
													  'upload_part', 'purge', 'fetch', 'cleanup',
													  'chunk')),
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
	CONSTRAINT job_project_check CHECK (project_id IS NOT NULL OR kind IN ('purge', 'cleanup', 'cancel'))
) WITH (toast_tuple_target = 8160);
-- (toast_tuple_target: a job, about 2 kB of state, is stored uncompressed up
-- to a page; pglz compressed it at every step and decompressed it at every
-- read of its state.  Larger states, a compile's, are compressed with lz4
-- where the server has it: several times faster than pglz both ways.)
DO $$
BEGIN
	ALTER TABLE hagen.job ALTER COLUMN state SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
	NULL;
END;
$$;
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
-- One live removal per directory of the work directory.
CREATE UNIQUE INDEX job_one_live_cleanup ON hagen.job ((state ->> 'dir'))
	WHERE kind = 'cleanup' AND status IN ('queued', 'running');
-- The recent generations of a model, for its typical time (polling).
CREATE INDEX job_generation_ms_idx ON hagen.job (provider, (state ->> 'model'), id)
	WHERE state ? 'generation_ms';

-- The structured log of every job, like a task logger.  A line names its
-- job and project without foreign keys: checking them locked the project's
-- row (FOR KEY SHARE) from every worker logging for it at once, and cost as
-- much as writing the line; the lines of a job or a project that is deleted
-- go with it by the triggers job_delete_logs and video_project_delete_logs.
CREATE TABLE hagen.job_log (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	job_id		bigint,
	project_id	uuid,
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
