-- hagenkit install script, part 45: the video models, as data: what each
-- takes and what it costs.

-- A provider's image-to-video model at one output resolution: the names
-- of the input fields it takes (NULL: it takes no such input), the clip
-- lengths it makes, the largest image it should be sent, and its price in
-- cents per generated second, without and with sound (NULL: it makes
-- none).  The request of a clip is built from these names, and a model
-- with no row here is refused by start_video.  Operators may add rows.
-- A model whose resolution is chosen by a setting (xAI: resolution_field,
-- hagen.xai_resolution) has a row per resolution; any other has one row.
CREATE TABLE hagen.video_model (
	provider				text NOT NULL CHECK (provider IN ('fal', 'xai')),
	model					text NOT NULL CHECK (model <> ''),
	resolution				text NOT NULL CHECK (resolution ~ '^[1-9][0-9]*p$'),
	start_image_field		text NOT NULL,
	end_image_field			text,
	audio_field				text,
	cfg_scale_field			text,
	aspect_ratio_field		text,
	resolution_field		text,
	negative_prompt_field	text,
	durations				integer[] NOT NULL
		CHECK (cardinality(durations) > 0 AND 0 < ALL (durations) AND array_position(durations, NULL) IS NULL),
	max_image_side			integer NOT NULL CHECK (max_image_side BETWEEN 300 AND 8192),
	max_image_bytes			integer NOT NULL CHECK (max_image_bytes > 0),
	cents_per_second		numeric NOT NULL CHECK (cents_per_second >= 0),
	cents_per_second_audio	numeric CHECK (cents_per_second_audio >= 0),
	PRIMARY KEY (provider, model, resolution),
	CONSTRAINT video_model_fields_check CHECK (concat_ws(',', start_image_field, end_image_field,
		audio_field, cfg_scale_field, aspect_ratio_field, resolution_field, negative_prompt_field)
		~ '^[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*$'),
	CONSTRAINT video_model_audio_check CHECK ((audio_field IS NULL) = (cents_per_second_audio IS NULL))
);
CREATE UNIQUE INDEX video_model_one_resolution ON hagen.video_model (provider, model)
	WHERE resolution_field IS NULL;
-- Prices from the providers' pages (../shared/specs/): Kling v2.6 pro $0.07/s
-- silent, $0.14/s with sound; v2.5-turbo pro $0.35 per 5 s + $0.07/s; v2.1
-- pro $0.49 per 5 s + $0.098/s; grok-imagine-video $0.05/s at 480p, $0.07/s
-- at 720p, sound included.  Image limits: Kling takes at most 10 MB; the
-- sides are ours (the clips are at most 1080p, a larger photo only costs
-- upload time).
INSERT INTO hagen.video_model VALUES
	('fal', 'fal-ai/kling-video/v2.6/pro/image-to-video', '1080p', 'start_image_url', 'end_image_url',
	 'generate_audio', NULL, NULL, NULL, 'negative_prompt', '{5,10}', 1920, 10485760, 7, 14),
	('fal', 'fal-ai/kling-video/v2.5-turbo/pro/image-to-video', '1080p', 'image_url', 'tail_image_url',
	 NULL, 'cfg_scale', NULL, NULL, 'negative_prompt', '{5,10}', 1920, 10485760, 7, NULL),
	('fal', 'fal-ai/kling-video/v2.1/pro/image-to-video', '1080p', 'image_url', 'tail_image_url',
	 NULL, 'cfg_scale', NULL, NULL, 'negative_prompt', '{5,10}', 1920, 10485760, 9.8, NULL),
	('xai', 'grok-imagine-video', '480p', 'image', NULL, 'generate_audio', NULL, 'aspect_ratio',
	 'resolution', NULL, '{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15}', 1920, 10485760, 5, 5),
	('xai', 'grok-imagine-video', '720p', 'image', NULL, 'generate_audio', NULL, 'aspect_ratio',
	 'resolution', NULL, '{1,2,3,4,5,6,7,8,9,10,11,12,13,14,15}', 1920, 10485760, 7, 7);

-- The model a provider uses now.
CREATE FUNCTION hagen._model(provider text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE provider
		WHEN 'fal' THEN hagen._setting('hagen.fal_video_model', 'fal-ai/kling-video/v2.6/pro/image-to-video')
		WHEN 'xai' THEN hagen._setting('hagen.xai_video_model', 'grok-imagine-video')
	END;

-- The resolution asked of a provider: xAI's is a setting; Fal's Kling
-- models make one.
CREATE FUNCTION hagen._resolution(provider text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE provider WHEN 'xai' THEN hagen._setting('hagen.xai_resolution', '720p') END;

-- The row of a provider's model (by default the one it uses now) at the
-- resolution asked of it; NULL when there is none.
CREATE FUNCTION hagen._video_model(provider text, model text DEFAULT NULL) RETURNS hagen.video_model
	LANGUAGE sql STABLE AS $$
	SELECT m FROM hagen.video_model m
	WHERE m.provider = $1 AND m.model = coalesce($2, hagen._model($1))
	  AND (m.resolution_field IS NULL OR m.resolution = hagen._resolution($1))
	LIMIT 1;
$$;

-- The input field names of a model, by role.
CREATE FUNCTION hagen._model_fields(m hagen.video_model) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN jsonb_strip_nulls(jsonb_build_object('start_image', m.start_image_field,
		'end_image', m.end_image_field, 'audio', m.audio_field, 'cfg_scale', m.cfg_scale_field,
		'aspect_ratio', m.aspect_ratio_field, 'resolution', m.resolution_field,
		'negative_prompt', m.negative_prompt_field));

-- Cents for generating seconds of video on a model, with or without sound.
CREATE FUNCTION hagen._cost_cents(m hagen.video_model, seconds numeric, audio boolean)
	RETURNS integer LANGUAGE sql IMMUTABLE
	RETURN ceil(seconds * CASE WHEN audio AND m.audio_field IS NOT NULL THEN m.cents_per_second_audio
							   ELSE m.cents_per_second END)::integer;

-- The body of a generation request from a job's state, named as its model
-- wants: Fal takes images as URLs and the duration as a string ("5"), xAI
-- an image object and an integer.  Only the fields the model takes are
-- sent (Fal refuses others with a 422); sound is always sent explicitly,
-- since both providers make it by default.
CREATE FUNCTION hagen._model_input(s jsonb, provider text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	f jsonb := coalesce(s -> 'fields', hagen._model_fields(hagen._video_model(provider, s ->> 'model')));
	b jsonb;
BEGIN
	IF f IS NULL THEN
		RAISE EXCEPTION 'model "%" of provider "%" has no row in hagen.video_model', s ->> 'model', provider
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	b := jsonb_build_object(f ->> 'start_image', CASE provider WHEN 'xai'
							THEN jsonb_build_object('url', s ->> 'start_image')
							ELSE to_jsonb(s ->> 'start_image') END,
							'prompt', s ->> 'prompt',
							'duration', CASE provider WHEN 'xai' THEN to_jsonb((s ->> 'duration')::integer)
										ELSE to_jsonb(s ->> 'duration') END);
	IF f ? 'end_image' AND s ->> 'end_image' IS NOT NULL THEN
		b := b || jsonb_build_object(f ->> 'end_image', s ->> 'end_image');
	END IF;
	IF f ? 'negative_prompt' AND s ->> 'negative_prompt' IS NOT NULL THEN
		b := b || jsonb_build_object(f ->> 'negative_prompt', s ->> 'negative_prompt');
	END IF;
	IF f ? 'cfg_scale' THEN
		b := b || jsonb_build_object(f ->> 'cfg_scale', 0.5);
	END IF;
	IF f ? 'aspect_ratio' AND s ->> 'aspect_ratio' IS NOT NULL THEN
		b := b || jsonb_build_object(f ->> 'aspect_ratio', s ->> 'aspect_ratio');
	END IF;
	IF f ? 'resolution' THEN
		b := b || jsonb_build_object(f ->> 'resolution', coalesce(s ->> 'resolution', hagen._resolution(provider)));
	END IF;
	IF f ? 'audio' THEN
		b := b || jsonb_build_object(f ->> 'audio', coalesce((s ->> 'audio')::boolean, false));
	END IF;
	RETURN b;
END;
$$;

-- Refuses a run the provider's model cannot make: a model without a row
-- (its fields and price unknown), sound asked of a silent model, a clip
-- length the model does not make.
CREATE FUNCTION hagen._check_model(p hagen.video_project) RETURNS hagen.video_model
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	m hagen.video_model := hagen._video_model(p.provider);
	bad record;
BEGIN
	IF m.model IS NULL THEN
		RAISE EXCEPTION 'model "%" of provider "%" has no row in hagen.video_model%', hagen._model(p.provider),
			p.provider, coalesce(' at ' || hagen._resolution(p.provider), '')
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'hagenkit builds the request from the row''s field names and estimates the cost from its price.',
				  HINT = format('Set %s to one of: %s; or have an operator add a row for it.',
								CASE p.provider WHEN 'fal' THEN 'hagen.fal_video_model' ELSE 'hagen.xai_video_model' END,
								coalesce((SELECT string_agg(DISTINCT v.model || coalesce(' (' || v.resolution || ')', ''), ', ')
										  FROM hagen.video_model v WHERE v.provider = p.provider), 'none'));
	END IF;
	IF p.generate_native_audio AND m.audio_field IS NULL THEN
		RAISE EXCEPTION 'model "%" makes no sound, and video project % asks for native audio', m.model, p.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Turn generate_native_audio off with hagen.update_project(), or use a model that makes sound.';
	END IF;
	SELECT c.sequence_order, c.duration INTO bad FROM hagen.video_clip c
	WHERE c.project_id = p.id AND c.status <> 'completed' AND NOT c.duration::integer = ANY (m.durations)
	ORDER BY c.sequence_order LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'clip % of video project % lasts % s, which model "%" does not make', bad.sequence_order,
			p.id, bad.duration, m.model
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Its clips last %s seconds.', array_to_string(m.durations, ', '));
	END IF;
	RETURN m;
END;
$$;
