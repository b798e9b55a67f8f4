-- hagenkit install script, part 40: prompts.

-- The room types of the app hagenkit replaces, spelled as it spells them,
-- each with the parts of its default prompt in the app's structure (camera
-- action, direction and speed, framing, subject, style), its name in
-- prose (for transition prompts) and the ambience asked for with native
-- audio.  aliases are other spellings that mean the same room (the room
-- types of hagenkit 0.3).  Room types are matched after lower-casing and
-- turning spaces and underscores into hyphens, so "living_room" and
-- "Living Room" are "living-room".  Operators may edit or add rows; a room
-- type found nowhere gets the prompt of "other".
CREATE TABLE hagen.room_prompt (
	room_type	text PRIMARY KEY CHECK (room_type ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
	name		text NOT NULL CHECK (name <> ''),
	camera		text NOT NULL CHECK (camera <> ''),
	movement	text NOT NULL CHECK (movement <> ''),
	framing		text NOT NULL CHECK (framing <> ''),
	subject		text NOT NULL CHECK (subject <> ''),
	style		text NOT NULL CHECK (style <> ''),
	ambience	text NOT NULL CHECK (ambience <> ''),
	aliases		text[] NOT NULL DEFAULT '{}'
		CHECK (array_position(aliases, NULL) IS NULL)
);
INSERT INTO hagen.room_prompt (room_type, name, camera, movement, framing, subject, style, ambience, aliases) VALUES
	('exterior', 'exterior', 'Slow dolly-in', 'gliding steadily forward toward the entrance', 'wide establishing shot at eye level', 'the front of the house with its facade, entrance and landscaping', 'photorealistic real estate video, soft daylight, gentle parallax, stabilized gimbal motion', 'birdsong and a light breeze outside', '{front-yard}'),
	('hallway', 'hallway', 'Smooth walk-through', 'moving slowly forward down the hall', 'wide centred shot at eye level', 'the hallway with its doors, floor and lights', 'photorealistic real estate video, even natural light, stabilized gimbal motion', 'soft footsteps in a quiet hall', '{entryway,staircase,hall}'),
	('living-room', 'living room', 'Slow dolly-in', 'moving gently forward with subtle parallax', 'wide-angle shot at eye level', 'the living room with its seating area and windows', 'photorealistic real estate video, bright inviting daylight, stabilized gimbal motion', 'a quiet, warm room tone', '{family-room,lounge}'),
	('kitchen', 'kitchen', 'Slow lateral glide', 'moving steadily from left to right along the counters', 'medium-wide shot at counter height', 'the kitchen with its island, countertops and appliances', 'photorealistic real estate video, crisp clean light, stabilized gimbal motion', 'a faint kitchen hum', '{}'),
	('dining-room', 'dining room', 'Slow orbit', 'circling gently around the table', 'medium-wide shot at eye level', 'the dining room with its table, chairs and lighting', 'photorealistic real estate video, warm elegant light, stabilized gimbal motion', 'a calm, quiet room tone', '{}'),
	('tv-room', 'TV room', 'Slow pan', 'turning gently from left to right', 'wide shot at seated eye level', 'the TV room with its sofa and screen', 'photorealistic real estate video, soft cosy light, stabilized gimbal motion', 'a soft, cosy room tone', '{den,media-room}'),
	('bedroom', 'bedroom', 'Slow push-in', 'moving softly forward toward the bed', 'wide shot at eye level', 'the bedroom with the bed, textiles and windows', 'photorealistic real estate video, soft morning light through the curtains, serene mood', 'a very quiet, restful room tone', '{primary-bedroom,master-bedroom}'),
	('childrens-room', 'children''s room', 'Gentle dolly-in', 'moving slowly forward', 'wide shot from a low eye level', 'the children''s room with its bed, toys and playful colours', 'photorealistic real estate video, bright cheerful daylight, stabilized gimbal motion', 'a soft, quiet room tone', '{kids-room,nursery}'),
	('bathroom', 'bathroom', 'Slow pan', 'sweeping gently from the vanity to the shower', 'medium shot at eye level', 'the bathroom with its vanity, tiles and fixtures', 'photorealistic real estate video, bright spa-like light, gleaming surfaces', 'a faint echo of a quiet bathroom', '{}'),
	('toilet', 'toilet', 'Slow tilt-down', 'moving gently downward', 'medium close shot, centred', 'the toilet room with its fixtures and tiles', 'photorealistic real estate video, clean even light, stabilized gimbal motion', 'a faint echo of a small quiet room', '{wc,powder-room}'),
	('walk-in-closet', 'walk-in closet', 'Slow dolly-in', 'moving gently forward between the shelves', 'medium-wide shot at eye level', 'the walk-in closet with its shelving and hanging space', 'photorealistic real estate video, soft even light, stabilized gimbal motion', 'a hushed, muffled room tone', '{closet,wardrobe}'),
	('laundry-room', 'laundry room', 'Slow push-in', 'moving gently toward the appliances', 'medium shot at counter height', 'the laundry room with its washer, dryer and storage', 'photorealistic real estate video, bright clean light, stabilized gimbal motion', 'a faint appliance hum', '{laundry}'),
	('office', 'office', 'Slow push-in', 'moving gently toward the desk and window', 'medium-wide shot at eye level', 'the office with its desk, chair and shelves', 'photorealistic real estate video, focused calm daylight, stabilized gimbal motion', 'a quiet study room tone', '{study}'),
	('library', 'library', 'Slow lateral track', 'moving steadily along the bookshelves', 'medium-wide shot at eye level', 'the library with its bookshelves and reading chair', 'photorealistic real estate video, warm soft light, stabilized gimbal motion', 'a hushed, quiet library tone', '{}'),
	('gym', 'gym', 'Slow pan', 'sweeping gently across the room', 'wide shot at eye level', 'the home gym with its equipment, mirrors and flooring', 'photorealistic real estate video, bright even light, stabilized gimbal motion', 'a quiet room tone with a faint ventilation hum', '{fitness-room}'),
	('sauna', 'sauna', 'Slow push-in', 'moving gently toward the benches', 'medium-wide shot at seated eye level', 'the sauna with its wooden benches and warm light', 'photorealistic real estate video, warm golden light, calm steady motion', 'a soft crackle of heat in a wooden room', '{}'),
	('pool-area', 'pool area', 'Low slow dolly', 'gliding along the pool edge', 'wide shot close to the water', 'the pool area with the shimmering water, deck and loungers', 'photorealistic real estate video, bright clear sky, stabilized gimbal motion', 'soft water lapping', '{pool}'),
	('hobby-room', 'hobby room', 'Slow dolly-in', 'moving gently forward', 'medium-wide shot at eye level', 'the hobby room with its workspace and equipment', 'photorealistic real estate video, even natural light, stabilized gimbal motion', 'a quiet room tone', '{playroom,games-room}'),
	('pantry', 'pantry', 'Slow tilt-up', 'moving gently upward along the shelves', 'medium shot at eye level', 'the pantry with its shelves and storage', 'photorealistic real estate video, clean even light, stabilized gimbal motion', 'a faint, muffled room tone', '{}'),
	('storage-room', 'storage room', 'Slow pan', 'turning gently across the space', 'wide shot at eye level', 'the storage room with its shelving and open space', 'photorealistic real estate video, even light, stabilized gimbal motion', 'a quiet, muffled room tone', '{storage}'),
	('utility-room', 'utility room', 'Slow pan', 'turning gently across the installations', 'medium-wide shot at eye level', 'the utility room with its installations and storage', 'photorealistic real estate video, clean even light, stabilized gimbal motion', 'a faint technical hum', '{boiler-room}'),
	('conservatory', 'conservatory', 'Slow dolly-in', 'moving gently toward the glass walls', 'wide shot at eye level', 'the conservatory with its glass walls, plants and daylight', 'photorealistic real estate video, bright natural light, stabilized gimbal motion', 'birdsong heard through glass and a soft room tone', '{sunroom,winter-garden}'),
	('garage', 'garage', 'Slow lateral pan', 'moving steadily across the space', 'wide shot at eye level', 'the garage with its floor, doors and storage', 'photorealistic real estate video, clean even lighting, stabilized gimbal motion', 'a quiet garage echo', '{carport}'),
	('terrace', 'terrace', 'Slow lateral slide', 'moving gently toward the view', 'wide shot at eye level', 'the terrace with its outdoor furniture and view', 'photorealistic real estate video, relaxed late-afternoon light, stabilized gimbal motion', 'a light breeze and distant birds', '{patio,balcony,deck}'),
	('garden', 'garden', 'Slow crane-up', 'rising gently while moving forward', 'wide shot', 'the garden with its lawn, plants and paths', 'photorealistic real estate video, calm afternoon light, plants swaying slightly', 'birds and leaves rustling in a light breeze', '{backyard,yard}'),
	('landscape', 'landscape', 'Slow aerial pan', 'sweeping gently across the horizon', 'extra-wide shot', 'the surrounding landscape and the view from the property', 'photorealistic real estate video, atmospheric depth, golden light', 'wind and distant nature ambience', '{view,surroundings}'),
	('other', 'room', 'Slow smooth dolly-in', 'moving gently forward with subtle parallax', 'wide shot at eye level', 'the space', 'photorealistic real estate video, natural light, stabilized gimbal motion', 'a natural, quiet ambience of the space', '{basement}');

-- A room type as the room_prompt table spells it: lower case, spaces and
-- underscores as hyphens, apostrophes dropped ("Children''s Room" ->
-- "childrens-room"); NULL for none.
CREATE FUNCTION hagen._room_key(room_type text) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN nullif(trim(BOTH '-' FROM regexp_replace(regexp_replace(lower(btrim(room_type)),
		'[''\u2019]', '', 'g'), '[\s_-]+', '-', 'g')), '');

-- The room of a room type: its own row, the row that lists it as an alias,
-- else the row of "other" (or, if an operator deleted that, a general one).
CREATE FUNCTION hagen._room(room_type text) RETURNS hagen.room_prompt
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	found hagen.room_prompt;
BEGIN
	-- (PL/pgSQL: a SQL function with a query for body is parsed and planned
	-- at every call.)
	SELECT (f.r).* INTO found FROM (
		SELECT r, 0 AS rank FROM hagen.room_prompt r WHERE r.room_type = hagen._room_key(_room.room_type)
		UNION ALL
		SELECT r, 1 FROM hagen.room_prompt r WHERE hagen._room_key(_room.room_type) = ANY (r.aliases)
		UNION ALL
		SELECT r, 2 FROM hagen.room_prompt r WHERE r.room_type = 'other'
		UNION ALL
		SELECT ROW('other', 'room', 'Slow smooth dolly-in', 'moving gently forward with subtle parallax',
				   'wide shot at eye level', 'the space',
				   'photorealistic real estate video, natural light, stabilized gimbal motion',
				   'a natural, quiet ambience of the space', '{}'::text[])::hagen.room_prompt, 3
	) AS f
	ORDER BY rank, (r).room_type LIMIT 1;
	RETURN found;
END;
$$;

-- What a room is called in prose: its label, else the name of its room
-- type (a type the table does not know, or one of "other", as it is
-- written, hyphens as spaces), else "room".
CREATE FUNCTION hagen._room_name(room_type text, label text) RETURNS text
	LANGUAGE sql STABLE
	RETURN coalesce(nullif(btrim(label), ''),
		nullif((hagen._room(room_type)).name, (hagen._room('other')).name),
		replace(nullif(hagen._room_key(room_type), 'other'), '-', ' '),
		'room');

-- The default motion prompt of a room type, in the app's structure:
-- "{camera}, {movement}, {framing}: {subject}. {style}", where the subject
-- ends with ", the {label}" when there is one; a room type of "other" (or
-- an unknown one) is the subject itself.
CREATE FUNCTION hagen._room_motion(room_type text, label text DEFAULT NULL) RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	r hagen.room_prompt := hagen._room(room_type);
	subject text := r.subject || coalesce(', the ' || nullif(btrim(label), ''), '');
BEGIN
	IF r.room_type = 'other' AND hagen._room_name(room_type, label) <> 'room' THEN
		subject := 'the ' || hagen._room_name(room_type, label);
	END IF;
	RETURN format('%s, %s, %s: %s. %s', upper(left(r.camera, 1)) || substr(r.camera, 2),
				  r.movement, r.framing, subject, upper(left(r.style, 1)) || substr(r.style, 2));
END;
$$;

-- The full prompt of a clip: its own motion prompt, or its room's with its
-- label; with native audio on, a sound description from the room's
-- ambience and the music's mood and category.
CREATE FUNCTION hagen._clip_prompt(c hagen.video_clip, p hagen.video_project) RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	prompt text := coalesce(c.motion_prompt, hagen._room_motion(c.room_type, c.room_label));
	m hagen.music_track;
BEGIN
	IF NOT p.generate_native_audio THEN
		RETURN prompt;
	END IF;
	SELECT * INTO m FROM hagen.music_track WHERE id = p.music_track_id;
	RETURN rtrim(prompt, '. ') || '. Sound: ' || (hagen._room(c.room_type)).ambience
		|| CASE WHEN m.id IS NOT NULL THEN
				format(', in a %s mood that suits %s music',
					   coalesce(nullif(btrim(m.mood), ''), 'calm'),
					   coalesce(nullif(btrim(m.category), ''), 'background'))
		   ELSE '' END
		|| '; no speech, no music.';
END;
$$;

-- The prompt of a seamless transition from a clip into the next one.
CREATE FUNCTION hagen._transition_prompt(c hagen.video_clip, next hagen.video_clip) RETURNS text
	LANGUAGE sql STABLE
	RETURN format('Seamless continuous camera move out of the %s, moving slowly forward towards the %s, '
				  'smooth steady glide, consistent lighting, photorealistic real estate video, no cuts',
				  hagen._room_name(c.room_type, c.room_label), hagen._room_name(next.room_type, next.room_label));

CREATE FUNCTION hagen._negative_prompt() RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN 'blur, distortion, warped walls, bent lines, people, text, watermark, flicker, low quality';
