-- hagenkit install script, part 26: managing projects (change settings,
-- remove and reorder clips, delete, list), all under the tenant rules.

-- Refuses to change a project while work of it runs: a run, or the steps
-- a canceled run still has in flight.
CREATE FUNCTION hagen._check_idle(p hagen.video_project, what text) RETURNS void
	LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF p.status IN ('generating', 'compiling') THEN
		RAISE EXCEPTION 'cannot % video project % while it is %', what, p.id, p.status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Wait until it has finished, or cancel it with hagen.cancel_video() first.';
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.job j WHERE j.project_id = p.id AND j.status IN ('queued', 'running')
			   AND j.kind IN ('clip', 'transition', 'compile', 'upload_part')) THEN
		RAISE EXCEPTION 'cannot % video project %: its canceled run is still stopping', what, p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'The steps it had in flight end within a minute or two; try again then.';
	END IF;
END;
$$;

-- A finished project whose video no longer matches its clips or settings
-- goes back to pending, so that start_video makes it again (generating
-- only the clips it lacks).  Its last video stays where it is until then.
CREATE FUNCTION hagen._reopen(project uuid) RETURNS void
	LANGUAGE sql AS $$
	UPDATE hagen.video_project v
	SET status = 'pending', completed_at = NULL,
		progress = '{"step": "created", "label": "Created", "percent": 0}'
	WHERE v.id = project AND v.status IN ('completed', 'failed', 'canceled');
$$;

-- Which clip follows which in a project: {clip id: next clip id or null}.
CREATE FUNCTION hagen._successors(project uuid) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN (SELECT coalesce(jsonb_object_agg(s.id, s.next), '{}')
			FROM (SELECT c.id, lead(c.id) OVER (ORDER BY c.sequence_order) AS next
				  FROM hagen.video_clip c WHERE c.project_id = project) AS s);

-- Puts a project's clips in the order given (every clip of the project,
-- once), numbered 0, 1, 2, ...; a transition whose next clip is no longer
-- the one it was made for is made again; the counts are updated.  before
-- is _successors() as it was before the change.
CREATE FUNCTION hagen._reorder(project uuid, ids uuid[], before jsonb) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	n integer := coalesce(cardinality(ids), 0);
	free integer;
	after jsonb;
BEGIN
	IF n > 0 THEN
		-- sequence_order is unique per project and checked row by row, so
		-- the clips go through a block of numbers no clip holds (of the n + 1
		-- blocks of n numbers above n - 1, one at least is free) on their way.
		SELECT k INTO free FROM generate_series(1, n + 1) AS k
		WHERE NOT EXISTS (SELECT 1 FROM hagen.video_clip c WHERE c.project_id = project
						  AND c.sequence_order >= k * n AND c.sequence_order < k * n + n)
		ORDER BY k LIMIT 1;
		UPDATE hagen.video_clip c SET sequence_order = free * n + x.pos - 1
		FROM unnest(ids) WITH ORDINALITY AS x(id, pos) WHERE c.id = x.id;
		UPDATE hagen.video_clip c SET sequence_order = x.pos - 1
		FROM unnest(ids) WITH ORDINALITY AS x(id, pos) WHERE c.id = x.id;
	END IF;
	after := hagen._successors(project);
	UPDATE hagen.video_clip c SET transition_status = NULL, transition_clip_url = NULL
	WHERE c.project_id = project AND c.transition_status IS NOT NULL
	  AND before -> (c.id::text) IS DISTINCT FROM after -> (c.id::text);
	UPDATE hagen.video_project v
	SET clip_count = s.n, completed_clips = s.ok, failed_clips = s.bad
	FROM (SELECT count(*) AS n, count(*) FILTER (WHERE status = 'completed') AS ok,
				 count(*) FILTER (WHERE status IN ('failed', 'canceled')) AS bad
		  FROM hagen.video_clip WHERE project_id = project) AS s
	WHERE v.id = project;
END;
$$;

-- The clip of an id, checked like a project: it exists and the session's
-- role may use its workspace.
CREATE FUNCTION hagen._clip(clip uuid) RETURNS hagen.video_clip
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	c hagen.video_clip;
BEGIN
	IF clip IS NULL THEN
		RAISE EXCEPTION 'clip id must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the uuid returned by hagen.add_clip().';
	END IF;
	SELECT * INTO c FROM hagen.video_clip WHERE id = clip;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'video clip % does not exist', clip
			USING ERRCODE = 'undefined_object',
				  HINT = 'Use the uuid returned by hagen.add_clip(); hagen.video_status() lists a project''s clips.';
	END IF;
	PERFORM hagen._project(c.project_id);
	RETURN c;
END;
$$;

-- Changes the settings of a project while nothing of it runs.  NULL leaves
-- a setting as it is; remove_music takes the music away; property_id ''
-- clears it.  A new aspect ratio or framing makes every clip and transition
-- again at the next run (they have the old shape), a change of native
-- audio every clip; a finished project whose video changes goes back to
-- pending.  Returns the project's status and the settings that changed.
CREATE FUNCTION hagen.update_project(project_id uuid,
									 aspect_ratio text DEFAULT NULL,
									 provider text DEFAULT NULL,
									 generate_native_audio boolean DEFAULT NULL,
									 music_track_id uuid DEFAULT NULL,
									 music_volume real DEFAULT NULL,
									 video_volume real DEFAULT NULL,
									 metadata jsonb DEFAULT NULL,
									 crossfade real DEFAULT NULL,
									 property_id text DEFAULT NULL,
									 framing text DEFAULT NULL,
									 remove_music boolean DEFAULT false)
	RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	old hagen.video_project := hagen._project(project_id);
	p hagen.video_project;
	changed text[];
BEGIN
	SELECT * INTO old FROM hagen.video_project v WHERE v.id = old.id FOR UPDATE;
	PERFORM hagen._check_idle(old, 'change');
	IF music_track_id IS NOT NULL AND coalesce(remove_music, false) THEN
		RAISE EXCEPTION 'music_track_id and remove_music contradict each other'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass a music_track_id to change the music, or remove_music => true to have none.';
	END IF;
	p := old;
	p.aspect_ratio := coalesce(update_project.aspect_ratio, p.aspect_ratio);
	p.provider := coalesce(update_project.provider, p.provider);
	p.generate_native_audio := coalesce(update_project.generate_native_audio, p.generate_native_audio);
	p.music_track_id := CASE WHEN coalesce(remove_music, false) THEN NULL
							 ELSE coalesce(update_project.music_track_id, p.music_track_id) END;
	p.music_volume := coalesce(update_project.music_volume, p.music_volume);
	p.video_volume := coalesce(update_project.video_volume, p.video_volume);
	p.metadata := coalesce(update_project.metadata, p.metadata);
	p.crossfade := coalesce(update_project.crossfade, p.crossfade);
	p.property_id := CASE WHEN update_project.property_id IS NULL THEN p.property_id
						  ELSE nullif(btrim(update_project.property_id), '') END;
	p.framing := coalesce(update_project.framing, p.framing);
	PERFORM hagen._check_settings(p);

	SELECT array_agg(k ORDER BY k) INTO changed
	FROM jsonb_each(to_jsonb(p)) AS n(k, v)
	WHERE v IS DISTINCT FROM to_jsonb(old) -> k;
	IF changed IS NULL THEN
		RETURN hagen.video_status(old.id) || '{"changed": []}';
	END IF;
	UPDATE hagen.video_project v
	SET aspect_ratio = p.aspect_ratio, provider = p.provider,
		generate_native_audio = p.generate_native_audio, music_track_id = p.music_track_id,
		music_volume = p.music_volume, video_volume = p.video_volume, metadata = p.metadata,
		crossfade = p.crossfade, property_id = p.property_id, framing = p.framing
	WHERE v.id = p.id;
	IF changed && ARRAY['aspect_ratio', 'framing', 'generate_native_audio'] THEN
		UPDATE hagen.video_clip c SET status = 'pending', clip_url = NULL, error_message = NULL
		WHERE c.project_id = p.id AND c.status <> 'pending';
	END IF;
	IF changed && ARRAY['aspect_ratio', 'framing'] THEN
		UPDATE hagen.video_clip c SET transition_status = NULL, transition_clip_url = NULL
		WHERE c.project_id = p.id AND c.transition_status IS NOT NULL;
	END IF;
	IF changed && ARRAY['aspect_ratio', 'framing', 'generate_native_audio', 'provider',
						'music_track_id', 'music_volume', 'video_volume', 'crossfade'] THEN
		PERFORM hagen._reorder(p.id, NULL, hagen._successors(p.id));	-- the counts
		PERFORM hagen._reopen(p.id);
	END IF;
	PERFORM hagen._log(NULL, p.id, 'info', 'settings changed: ' || array_to_string(changed, ', '));
	RETURN hagen.video_status(p.id) || jsonb_build_object('changed', to_jsonb(changed));
END;
$$;

-- Removes a clip from a project while nothing of it runs; the clips after
-- it move up one place.  Returns the project's status.
CREATE FUNCTION hagen.remove_clip(clip_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	c hagen.video_clip := hagen._clip(clip_id);
	p hagen.video_project;
	before jsonb;
	ids uuid[];
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = c.project_id FOR UPDATE;
	PERFORM hagen._check_idle(p, 'remove a clip from');
	before := hagen._successors(p.id);
	DELETE FROM hagen.video_clip v WHERE v.id = c.id;
	SELECT array_agg(v.id ORDER BY v.sequence_order) INTO ids
	FROM hagen.video_clip v WHERE v.project_id = p.id;
	PERFORM hagen._reorder(p.id, ids, before);
	PERFORM hagen._reopen(p.id);
	PERFORM hagen._log(NULL, p.id, 'info', format('clip %s removed from position %s', c.id, c.sequence_order));
	RETURN hagen.video_status(p.id);
END;
$$;

-- Moves a clip to a position (0 is the first) while nothing of its project
-- runs; the clips between shift by one.  Returns the project's status.
CREATE FUNCTION hagen.move_clip(clip_id uuid, "position" integer) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	c hagen.video_clip := hagen._clip(clip_id);
	p hagen.video_project;
	ids uuid[];
	n integer;
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = c.project_id FOR UPDATE;
	PERFORM hagen._check_idle(p, 'move a clip of');
	SELECT array_agg(v.id ORDER BY v.sequence_order) INTO ids
	FROM hagen.video_clip v WHERE v.project_id = p.id AND v.id <> c.id;
	n := coalesce(cardinality(ids), 0) + 1;
	IF "position" IS NULL OR "position" < 0 OR "position" >= n THEN
		RAISE EXCEPTION 'position % is not in video project %, which has % clip%', coalesce("position"::text, 'NULL'),
			p.id, n, CASE WHEN n = 1 THEN '' ELSE 's' END
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Positions count from 0: pass 0 to %s.', n - 1);
	END IF;
	PERFORM hagen._reorder(p.id, coalesce(ids[1:"position"], '{}') || c.id || coalesce(ids["position" + 1:], '{}'),
						   hagen._successors(p.id));
	PERFORM hagen._reopen(p.id);
	PERFORM hagen._log(NULL, p.id, 'info', format('clip %s moved to position %s', c.id, "position"));
	RETURN hagen.video_status(p.id);
END;
$$;

-- Deletes a project: what runs is stopped (requests at the provider get a
-- cancel, which outlives the project), its rows go, and every object it
-- stored is deleted from the bucket in the background.
CREATE FUNCTION hagen.delete_project(project_id uuid) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project := hagen._project(project_id);
	j hagen.job;
	cancels integer := 0;
	purge bigint;
BEGIN
	SELECT * INTO p FROM hagen.video_project v WHERE v.id = p.id FOR UPDATE;
	FOR j IN SELECT * FROM hagen.job q WHERE q.project_id = p.id AND q.status IN ('queued', 'running')
			   AND q.kind IN ('clip', 'transition') AND q.request_id IS NOT NULL
			   AND q.step IN ('submit', 'poll', 'result')
			 ORDER BY q.id
	LOOP
		PERFORM hagen._enqueue(NULL, NULL, 'cancel', j.provider, 'cancel',
			jsonb_build_object('request_id', j.request_id, 'model', j.state ->> 'model',
							   'cancel_url', j.state ->> 'cancel_url', 'deleted_project', p.id));
		cancels := cancels + 1;
	END LOOP;
	DELETE FROM hagen.video_project v WHERE v.id = p.id;
	SELECT q.id INTO purge FROM hagen.job q
	WHERE q.kind = 'purge' AND q.status IN ('queued', 'running') AND q.state ->> 'project_id' = p.id::text
	ORDER BY q.id DESC LIMIT 1;
	PERFORM hagen._log(purge, NULL, 'info', format('video project %s of workspace %s deleted', p.id, p.workspace_id),
					   jsonb_build_object('provider_cancels', cancels, 'status', p.status));
	RETURN jsonb_build_object('project_id', p.id, 'workspace_id', p.workspace_id, 'deleted', true,
							  'was', p.status, 'provider_cancels', cancels, 'purge_job_id', purge);
END;
$$;

-- The projects of a workspace, newest first, lim at a time; the next page
-- starts before the created_at of the last one.
CREATE FUNCTION hagen.list_projects(workspace_id text, lim integer DEFAULT 50,
									before timestamptz DEFAULT NULL)
	RETURNS TABLE (project_id uuid, property_id text, status text, progress jsonb,
				   aspect_ratio text, provider text, clip_count integer, completed_clips integer,
				   failed_clips integer, duration real, thumbnail_url text, final_video_url text,
				   estimated_cost_cents integer, actual_cost_cents integer, error_message text,
				   metadata jsonb, created_at timestamptz, updated_at timestamptz,
				   completed_at timestamptz)
	LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF list_projects.workspace_id IS NULL OR list_projects.workspace_id = '' THEN
		RAISE EXCEPTION 'workspace id must not be empty'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the workspace whose projects to list.';
	END IF;
	PERFORM hagen._check_workspace(list_projects.workspace_id);
	IF lim IS NULL OR lim < 1 OR lim > 1000 THEN
		RAISE EXCEPTION 'invalid limit %', coalesce(lim::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'List from 1 to 1000 projects at a time; page on with before => the created_at of the last.';
	END IF;
	RETURN QUERY
	SELECT v.id, v.property_id, v.status, v.progress, v.aspect_ratio, v.provider, v.clip_count,
		   v.completed_clips, v.failed_clips, v.duration, v.thumbnail_url, v.final_video_url,
		   v.estimated_cost_cents, v.actual_cost_cents, v.error_message, v.metadata, v.created_at,
		   v.updated_at, v.completed_at
	FROM hagen.video_project v
	WHERE v.workspace_id = list_projects.workspace_id
	  AND (list_projects.before IS NULL OR v.created_at < list_projects.before)
	ORDER BY v.created_at DESC, v.id DESC
	LIMIT lim;
END;
$$;
