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

-- Why a URL given by a user can never be fetched: not http(s), or its host
-- an address the network guard refuses (in any spelling) or a name that
-- always means this machine or the metadata service, unless it is the host
-- of a configured endpoint or listed in hagen.trusted_hosts; NULL when it
-- may be fetched (src/url_check.c).
CREATE FUNCTION hagen._url_refusal(url text) RETURNS text
	LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'hagen_url_refusal';

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

-- Checks the settings of a project (all but its workspace), as
-- create_project and update_project are given them.
CREATE FUNCTION hagen._check_settings(p hagen.video_project) RETURNS void
	LANGUAGE plpgsql STABLE AS $$
BEGIN
	PERFORM hagen._check_choice('aspect ratio', p.aspect_ratio, ARRAY['16:9', '9:16', '1:1']);
	PERFORM hagen._check_choice('provider', p.provider, ARRAY['fal', 'xai']);
	IF p.generate_native_audio IS NULL THEN
		RAISE EXCEPTION 'generate_native_audio must not be null'
			USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass true or false.';
	END IF;
	PERFORM hagen._check_volume('music volume', p.music_volume);
	PERFORM hagen._check_volume('video volume', p.video_volume);
	IF p.metadata IS NULL OR jsonb_typeof(p.metadata) <> 'object' THEN
		RAISE EXCEPTION 'metadata must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass ''{}'' for none.';
	END IF;
	IF p.crossfade IS NULL OR NOT (p.crossfade = 0 OR p.crossfade BETWEEN 0.1 AND 2) THEN
		RAISE EXCEPTION 'invalid crossfade %', coalesce(p.crossfade::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'The crossfade is the length in seconds of the fade at each cut between clips.',
				  HINT = 'Pass 0 for hard cuts, or from 0.1 to 2 seconds (0.5 is a common choice).';
	END IF;
	-- A track of another workspace is not there as far as this one knows.
	IF p.music_track_id IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM hagen.music_track m WHERE m.id = p.music_track_id
					   AND (m.workspace_id IS NULL OR m.workspace_id = p.workspace_id)) THEN
		RAISE EXCEPTION 'music track % does not exist', p.music_track_id
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'Create it with hagen.add_music_track() first, shared or in the project''s workspace.';
	END IF;
	IF length(p.property_id) > 200 OR p.property_id ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid property id "%"', left(p.property_id, 200)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use the app''s id of the property: at most 200 characters, no control characters.';
	END IF;
	PERFORM hagen._check_choice('framing', p.framing, ARRAY['crop', 'pad', 'none']);
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
									 metadata jsonb DEFAULT '{}',
									 crossfade real DEFAULT 0,
									 property_id text DEFAULT NULL,
									 framing text DEFAULT 'crop')
	RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
BEGIN
	IF workspace_id IS NULL OR workspace_id = '' OR workspace_id ~ '[/[:cntrl:]]'
	   OR workspace_id IN ('.', '..') OR length(workspace_id) > 200 THEN
		RAISE EXCEPTION 'invalid workspace id "%"', coalesce(left(workspace_id, 200), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'The workspace id becomes the first segment of every storage key.',
				  HINT = 'Use a non-empty id of at most 200 characters without "/" or control characters.';
	END IF;
	PERFORM hagen._check_workspace(workspace_id);
	p.workspace_id := create_project.workspace_id;
	p.aspect_ratio := create_project.aspect_ratio;
	p.provider := create_project.provider;
	p.generate_native_audio := create_project.generate_native_audio;
	p.music_track_id := create_project.music_track_id;
	p.music_volume := create_project.music_volume;
	p.video_volume := create_project.video_volume;
	p.metadata := create_project.metadata;
	p.crossfade := create_project.crossfade;
	p.property_id := nullif(btrim(create_project.property_id), '');
	p.framing := create_project.framing;
	PERFORM hagen._check_settings(p);

	INSERT INTO hagen.video_project AS v (workspace_id, aspect_ratio, provider,
			generate_native_audio, music_track_id, music_volume, video_volume, metadata, crossfade,
			property_id, framing)
	VALUES (p.workspace_id, p.aspect_ratio, p.provider, p.generate_native_audio, p.music_track_id,
			p.music_volume, p.video_volume, p.metadata, p.crossfade, p.property_id, p.framing)
	RETURNING v.id INTO p.id;
	RETURN p.id;
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
	IF length(room_type) > 100 OR length(room_label) > 200 THEN
		RAISE EXCEPTION 'room % "%..." is % characters long',
			CASE WHEN length(room_type) > 100 THEN 'type' ELSE 'label' END,
			left(CASE WHEN length(room_type) > 100 THEN room_type ELSE room_label END, 40),
			length(CASE WHEN length(room_type) > 100 THEN room_type ELSE room_label END)
			USING ERRCODE = 'string_data_right_truncation',
				  HINT = 'A room type has at most 100 characters and a room label at most 200; both go into the prompt.';
	END IF;
	IF motion_prompt IS NOT NULL AND length(motion_prompt) > 2000 THEN
		RAISE EXCEPTION 'motion prompt is % characters long', length(motion_prompt)
			USING ERRCODE = 'string_data_right_truncation',
				  HINT = 'Keep it under 2000 characters; providers refuse longer prompts.';
	END IF;
	IF coalesce(hagen._setting('hagen.max_clips_per_project')::integer, 20) > 0
	   AND (SELECT count(*) FROM hagen.video_clip c WHERE c.project_id = p.id)
		   >= coalesce(hagen._setting('hagen.max_clips_per_project')::integer, 20) THEN
		RAISE EXCEPTION 'video project % already has % clips, the most hagen.max_clips_per_project allows',
			p.id, hagen._setting('hagen.max_clips_per_project', '20')
			USING ERRCODE = 'program_limit_exceeded',
				  HINT = 'Make another project for the other photos, or ask for a higher limit.';
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

-- The music categories of the app hagenkit replaces.
CREATE FUNCTION hagen._music_categories() RETURNS text[]
	LANGUAGE sql IMMUTABLE RETURN ARRAY['modern', 'classical', 'upbeat', 'calm', 'cinematic'];

-- Is a role limited to some workspaces (listed in hagen.workspace_role)?
CREATE FUNCTION hagen._is_tenant(who name) RETURNS boolean
	LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	RETURN NOT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = who), false)
		AND NOT pg_has_role(who, 'hagen_operator', 'USAGE')
		AND EXISTS (SELECT 1 FROM hagen.workspace_role r JOIN pg_roles g ON g.rolname = r.role_name
					WHERE pg_has_role(who, g.oid, 'USAGE'));

-- Adds a music track and returns its id: a workspace's own, or with no
-- workspace one shared by every workspace (not for tenant roles).  The URL
-- must be one that can be fetched.
CREATE FUNCTION hagen.add_music_track(name text, audio_url text,
									  category text DEFAULT NULL,
									  mood text DEFAULT NULL,
									  duration real DEFAULT NULL,
									  workspace_id text DEFAULT NULL)
	RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	new_id uuid;
	why text;
BEGIN
	IF name IS NULL OR btrim(name) = '' THEN
		RAISE EXCEPTION 'music track name must not be empty'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the track a name.';
	END IF;
	IF workspace_id IS NOT NULL THEN
		IF workspace_id = '' OR workspace_id ~ '[/[:cntrl:]]' OR workspace_id IN ('.', '..')
		   OR length(workspace_id) > 200 THEN
			RAISE EXCEPTION 'invalid workspace id "%"', left(workspace_id, 200)
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Use a non-empty id of at most 200 characters without "/" or control characters, or NULL for a track every workspace may use.';
		END IF;
		PERFORM hagen._check_workspace(workspace_id);
	ELSIF hagen._is_tenant(session_user) THEN
		RAISE EXCEPTION 'role % may not add music shared by every workspace', session_user
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Pass workspace_id => one of its workspaces; shared tracks are added by operators.';
	END IF;
	PERFORM hagen._check_url('music track URL', audio_url);
	why := hagen._url_refusal(audio_url);
	IF why IS NOT NULL THEN
		RAISE EXCEPTION 'music track URL "%" can never be fetched: %', left(audio_url, 200), why
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Music is fetched from public addresses only: put the file on public storage, or have an operator list its host in hagen.trusted_hosts.';
	END IF;
	IF category IS NOT NULL THEN
		PERFORM hagen._check_choice('music category', lower(btrim(category)), hagen._music_categories());
	END IF;
	IF duration IS NOT NULL AND NOT (duration > 0 AND duration < 86400) THEN
		RAISE EXCEPTION 'invalid music track duration %', duration
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give the length in seconds, or NULL when unknown.';
	END IF;
	INSERT INTO hagen.music_track AS m (name, audio_url, category, mood, duration, workspace_id)
	VALUES (add_music_track.name, audio_url, lower(btrim(category)), mood, add_music_track.duration,
			add_music_track.workspace_id)
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
