-- hagenkit upgrade 0.2 -> 0.3: crossfades between clips.  Every change to
-- src/sql/ after 0.2 is repeated here, so that ALTER EXTENSION hagenkit
-- UPDATE gives exactly the catalog of a fresh install (test/t/006_upgrade.pl
-- compares them).
\echo Use "ALTER EXTENSION hagenkit UPDATE TO '0.3'" to load this file. \quit

-- Seconds of crossfade at every cut between clips (0: hard cuts).  Not
-- into or out of a seamless transition, which already joins its clips.
ALTER TABLE hagen.video_project ADD COLUMN crossfade real NOT NULL DEFAULT 0
	CHECK (crossfade = 0 OR crossfade BETWEEN 0.1 AND 2);

-- create_project takes the crossfade: a new signature, so the old function
-- goes (with its grants) and the new one gets the API's privileges.
DROP FUNCTION hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb);
-- Creates a video project and returns its id.
CREATE FUNCTION hagen.create_project(workspace_id text,
									 aspect_ratio text DEFAULT '16:9',
									 provider text DEFAULT 'fal',
									 generate_native_audio boolean DEFAULT false,
									 music_track_id uuid DEFAULT NULL,
									 music_volume real DEFAULT 0.3,
									 video_volume real DEFAULT 1.0,
									 metadata jsonb DEFAULT '{}',
									 crossfade real DEFAULT 0)
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
	IF crossfade IS NULL OR NOT (crossfade = 0 OR crossfade BETWEEN 0.1 AND 2) THEN
		RAISE EXCEPTION 'invalid crossfade %', coalesce(crossfade::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'The crossfade is the length in seconds of the fade at each cut between clips.',
				  HINT = 'Pass 0 for hard cuts, or from 0.1 to 2 seconds (0.5 is a common choice).';
	END IF;
	IF music_track_id IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM hagen.music_track m WHERE m.id = music_track_id) THEN
		RAISE EXCEPTION 'music track % does not exist', music_track_id
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'Create it with hagen.add_music_track() first.';
	END IF;

	INSERT INTO hagen.video_project AS p (workspace_id, aspect_ratio, provider,
			generate_native_audio, music_track_id, music_volume, video_volume, metadata, crossfade)
	VALUES (create_project.workspace_id, create_project.aspect_ratio, create_project.provider,
			create_project.generate_native_audio, create_project.music_track_id,
			create_project.music_volume, create_project.video_volume, create_project.metadata,
			create_project.crossfade)
	RETURNING p.id INTO new_id;
	RETURN new_id;
END;
$$;
REVOKE ALL ON FUNCTION hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real)
	FROM PUBLIC;
ALTER FUNCTION hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
GRANT EXECUTE ON FUNCTION hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb, real)
	TO hagen_user;

-- The compile's segments carry the crossfade of each cut.
-- The segments of the final video in order: completed clips by
-- sequence_order, each followed by its seamless transition when that
-- completed and leads into the very next clip; anything else is a cut, and
-- a clip after a cut fades in from the segment before it when the project
-- has a crossfade.
CREATE OR REPLACE FUNCTION hagen._compile_segments(p hagen.video_project) RETURNS jsonb
	LANGUAGE sql STABLE AS $$
	WITH ordered AS (
		SELECT c.*, lead(c.id) OVER (ORDER BY c.sequence_order) AS next_id
		FROM hagen.video_clip c WHERE c.project_id = p.id
	), kept0 AS (
		SELECT o.*, lead(o.id) OVER (ORDER BY o.sequence_order) AS next_kept
		FROM ordered o WHERE o.status = 'completed'
	), kept AS (
		SELECT k.*, lag(k.id) OVER w IS NULL AS first,
			   coalesce(lag(k.transition_type = 'seamless' AND k.transition_status = 'completed'
							AND k.next_id IS NOT NULL AND k.next_id = k.next_kept) OVER w, false)
				   AS after_transition
		FROM kept0 k WINDOW w AS (ORDER BY k.sequence_order)
	), segs AS (
		SELECT k.sequence_order, 0 AS part, jsonb_build_object(
				'kind', 'clip', 'clip_id', k.id,
				'label', coalesce(k.room_label, k.room_type, 'clip ' || k.sequence_order),
				'key', hagen.get_video_path(p.workspace_id, p.id, k.id || '.mp4'),
				'file', hagen._work_file(p.id, k.id || '.mp4'),
				'crossfade', CASE WHEN k.first OR k.after_transition THEN 0 ELSE p.crossfade END) AS seg
		FROM kept k
		UNION ALL
		SELECT k.sequence_order, 1, jsonb_build_object(
				'kind', 'transition', 'clip_id', k.id,
				'label', 'transition after ' || coalesce(k.room_label, k.room_type, 'clip ' || k.sequence_order),
				'key', hagen.get_video_path(p.workspace_id, p.id, 'transition_' || k.id || '.mp4'),
				'file', hagen._work_file(p.id, 'transition_' || k.id || '.mp4'),
				'crossfade', 0)
		FROM kept k
		WHERE k.transition_type = 'seamless' AND k.transition_status = 'completed'
		  AND k.next_id IS NOT NULL AND k.next_id = k.next_kept
	)
	SELECT coalesce(jsonb_agg(seg || jsonb_build_object('url', hagen._s3_url(seg ->> 'key'))
							  ORDER BY sequence_order, part), '[]')
	FROM segs;
$$;
