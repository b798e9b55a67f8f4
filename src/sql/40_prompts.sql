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
