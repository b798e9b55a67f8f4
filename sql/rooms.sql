-- The app's room types: the 27 it names, hyphenated, each with a prompt in
-- the app's structure and an ambience; 0.3's snake_case names as aliases;
-- an unknown type gets the generic prompt (no error); room labels in the
-- clip and transition prompts.
\pset null '(null)'
-- A project of clips given as JSON objects of add_clip's arguments (the
-- image is made up from the position); its photos are not fitted unless
-- framing says so (sql/framing.sql is about that).
CREATE OR REPLACE FUNCTION t.project_with(ws text, clips jsonb[], provider text DEFAULT 'fal',
										  audio boolean DEFAULT false, framing text DEFAULT 'none') RETURNS uuid
LANGUAGE plpgsql AS $f$
DECLARE
	p uuid := hagen.create_project(ws, provider => provider, generate_native_audio => audio, framing => framing);
	c jsonb;
	i integer := 0;
BEGIN
	FOREACH c IN ARRAY clips LOOP
		PERFORM hagen.add_clip(p, coalesce(c ->> 'source_image_url', format('https://img.example.com/%s.jpg', i)),
			end_image_url => c ->> 'end_image_url', room_type => c ->> 'room_type',
			room_label => c ->> 'room_label', motion_prompt => c ->> 'motion_prompt',
			duration => coalesce((c ->> 'duration')::real, 5),
			transition_type => coalesce(c ->> 'transition_type', 'cut'));
		i := i + 1;
	END LOOP;
	RETURN p;
END;
$f$;

-- The 27 room types, as the app spells them.
SELECT count(*) AS room_types,
       count(*) FILTER (WHERE room_type IN ('exterior', 'hallway', 'living-room', 'kitchen', 'dining-room',
			'tv-room', 'bedroom', 'childrens-room', 'bathroom', 'toilet', 'walk-in-closet', 'laundry-room',
			'office', 'library', 'gym', 'sauna', 'pool-area', 'hobby-room', 'pantry', 'storage-room',
			'utility-room', 'conservatory', 'garage', 'terrace', 'garden', 'landscape', 'other')) AS the_apps
FROM hagen.room_prompt;
-- Each has a prompt of its own (no two alike) and an ambience.
SELECT count(DISTINCT hagen._room_motion(room_type)) AS distinct_prompts,
       count(DISTINCT ambience) > 20 AS ambiences_vary,
       max(length(hagen._room_motion(room_type, repeat('x', 200)))) < 2500 AS under_klings_limit
FROM hagen.room_prompt;
SELECT hagen._room_motion('walk-in-closet') AS walk_in_closet;

-- Every spelling an app may send, and what it resolves to: the hyphenated
-- types, their snake_case and spaced forms, 0.3's names, and unknown ones.
SELECT given, hagen._room_key(given) AS key, (hagen._room(given)).room_type AS room
FROM unnest(ARRAY['living-room', 'living_room', 'Living Room', ' TV_Room ', 'tv-room', 'walk_in_closet',
	'Children''s Room', 'childrens_room', 'laundry_room', 'pool_area', 'hobby_room', 'storage_room',
	'utility_room', 'dining_room', 'front_yard', 'backyard', 'pool', 'patio', 'balcony', 'family_room',
	'primary_bedroom', 'entryway', 'staircase', 'laundry', 'basement', 'view', 'wine-cellar', '', NULL])
	WITH ORDINALITY AS x(given, n)
ORDER BY n;

-- Prompts of a project's clips and transitions as queued: the room's
-- prompt with the label, an unknown type the generic prompt, the clip's own
-- prompt as written, transitions naming where they go.
SELECT t.project_with('ws-rooms', ARRAY[
	'{"room_type": "living-room", "room_label": "Sunny lounge", "transition_type": "seamless"}',
	'{"room_type": "kitchen", "transition_type": "seamless"}',
	'{"room_type": "wine_cellar", "transition_type": "seamless"}',
	'{"room_type": "bedroom", "motion_prompt": "Orbit the bed slowly", "transition_type": "seamless"}',
	'{"room_label": "Roof deck"}']::jsonb[]) AS p \gset
SELECT hagen.start_video(:'p') ->> 'status' AS status;
SELECT c.sequence_order AS seq, j.kind, j.state ->> 'prompt' AS prompt
FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id WHERE j.project_id = :'p'
ORDER BY c.sequence_order, j.kind;
SELECT hagen.cancel_video(:'p') ->> 'status' AS canceled;

-- With native audio the prompt asks for the room's ambience, in the mood of
-- the music.
SELECT hagen.add_music_track('Morning', 'https://music.example.com/m.mp3', 'calm', 'serene') AS m \gset
SELECT hagen.create_project('ws-rooms', generate_native_audio => true, music_track_id => :'m') AS pa \gset
SELECT hagen.add_clip(:'pa', 'https://img.example.com/sauna.jpg', room_type => 'sauna', room_label => 'Spa') AS ca \gset
SELECT hagen._clip_prompt(c, p) AS with_audio
FROM hagen.video_clip c, hagen.video_project p WHERE c.id = :'ca' AND p.id = :'pa';

-- Operators edit prompts in the table; a changed row is used at once.
UPDATE hagen.room_prompt SET camera = 'Slow crane shot', aliases = aliases || '{spa}'
WHERE room_type = 'sauna';
SELECT hagen._room_motion('SPA') AS edited_through_new_alias;
UPDATE hagen.room_prompt SET camera = 'Slow push-in', aliases = array_remove(aliases, 'spa')
WHERE room_type = 'sauna';
-- Bad rows are refused.
\set VERBOSITY terse
INSERT INTO hagen.room_prompt (room_type, name, camera, movement, framing, subject, style, ambience)
VALUES ('Wine_Cellar', 'wine cellar', 'a', 'b', 'c', 'd', 'e', 'f');
\set VERBOSITY default
-- Over-long room types and labels are refused at add_clip.
\pset format unaligned
\pset tuples_only on
SELECT t.err(format('SELECT hagen.add_clip(%L, %L, room_type => repeat(%L, 101))', :'pa', 'https://img.example.com/a.jpg', 'k'));
SELECT t.err(format('SELECT hagen.add_clip(%L, %L, room_label => repeat(%L, 201))', :'pa', 'https://img.example.com/a.jpg', 'l'));
\pset format aligned
\pset tuples_only off
DELETE FROM hagen.video_project WHERE workspace_id = 'ws-rooms';
DELETE FROM hagen.job WHERE kind = 'purge';
DELETE FROM hagen.music_track WHERE id = :'m';
