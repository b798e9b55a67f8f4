-- Hostile and bad input at the SQL API: every case gets a clear error (or
-- is stored verbatim when it is merely odd), no process crashes and no
-- stored row is lost.  Network-level cases are in test/t/011_hostile.pl.
CREATE TEMP TABLE before AS
	SELECT (SELECT count(*) FROM hagen.video_project) AS projects,
		   (SELECT count(*) FROM hagen.video_clip) AS clips,
		   (SELECT count(*) FROM hagen.music_track) AS tracks;
SELECT hagen.create_project('ws-hostile') AS p \gset

-- Each case: what was tried, and what the caller sees.
CREATE TEMP TABLE cases (n serial, what text, q text);
INSERT INTO cases (what, q) VALUES
	('file:// URL', format('SELECT hagen.add_clip(%L, %L)', :'p', 'file:///etc/passwd')),
	('ftp:// URL', format('SELECT hagen.add_clip(%L, %L)', :'p', 'ftp://example.com/a.jpg')),
	('javascript: URL', format('SELECT hagen.add_clip(%L, %L)', :'p', 'javascript:alert(1)')),
	('gopher:// to Redis', format('SELECT hagen.add_clip(%L, %L)', :'p', 'gopher://127.0.0.1:6379/_FLUSHALL')),
	('data: URL', format('SELECT hagen.add_clip(%L, %L)', :'p', 'data:image/jpeg;base64,AAAA')),
	('URL with a newline (header injection)', format('SELECT hagen.add_clip(%L, %L)', :'p', E'http://a.example/x.jpg\r\nHost: evil')),
	('URL with no host', format('SELECT hagen.add_clip(%L, %L)', :'p', 'http:///x.jpg')),
	('empty URL', format('SELECT hagen.add_clip(%L, %L)', :'p', '')),
	('hostile end image URL', format('SELECT hagen.add_clip(%L, %L, %L)', :'p', 'https://img.example/a.jpg', 'file:///etc/shadow')),
	('hostile music URL', $$SELECT hagen.add_music_track('x', 'file:///dev/zero')$$),
	('clip of 7 seconds', format('SELECT hagen.add_clip(%L, %L, duration => 7)', :'p', 'https://img.example/a.jpg')),
	('clip of -5 seconds', format('SELECT hagen.add_clip(%L, %L, duration => -5)', :'p', 'https://img.example/a.jpg')),
	('clip of NaN seconds', format('SELECT hagen.add_clip(%L, %L, duration => %L)', :'p', 'https://img.example/a.jpg', 'NaN')),
	('music of 10^9 seconds', $$SELECT hagen.add_music_track('x', 'https://m.example/a.mp3', duration => 1e9)$$),
	('music volume 5', $$SELECT hagen.create_project('ws-x', music_volume => 5)$$),
	('video volume -1', $$SELECT hagen.create_project('ws-x', video_volume => -1)$$),
	('video volume NaN', $$SELECT hagen.create_project('ws-x', video_volume => 'NaN')$$),
	('aspect ratio 4:3', $$SELECT hagen.create_project('ws-x', aspect_ratio => '4:3')$$),
	('unknown provider', $$SELECT hagen.create_project('ws-x', provider => 'openai')$$),
	('prompt of 100,000 characters', format('SELECT hagen.add_clip(%L, %L, motion_prompt => repeat(%L, 100000))', :'p', 'https://img.example/a.jpg', 'x')),
	('workspace ".."', $$SELECT hagen.create_project('..')$$),
	('workspace with "/"', $$SELECT hagen.create_project('a/../b')$$),
	('workspace of 10,000 characters', $$SELECT hagen.create_project(repeat('w', 10000))$$),
	('storage key with ".."', $$SELECT hagen.presign_url('ws/../../etc/passwd')$$),
	('storage key with a leading "/"', $$SELECT hagen.presign_url('/ws/videos/x.mp4')$$),
	('storage key with "//"', $$SELECT hagen.presign_url('ws//x.mp4')$$),
	('presigned URL for 8 days', $$SELECT hagen.presign_url('ws/x.mp4', 'GET', '8 days')$$),
	('presigned URL with method POST', $$SELECT hagen.presign_url('ws/x.mp4', 'POST')$$),
	('negative sequence order', format('SELECT hagen.add_clip(%L, %L, sequence_order => -1)', :'p', 'https://img.example/a.jpg')),
	('metadata that is not an object', $$SELECT hagen.create_project('ws-x', metadata => '[1,2]')$$),
	('project id that does not exist', $$SELECT hagen.start_video('00000000-0000-4000-8000-000000000000')$$),
	('retry of a project never started', format('SELECT hagen.retry_video(%L)', :'p'));
SELECT n, what, t.err(q) AS error FROM cases ORDER BY n;

-- Odd but legitimate input is stored verbatim: SQL-looking text, unicode,
-- emoji, right-to-left text; nothing is executed.
SELECT hagen.add_clip(:'p', 'https://img.example/a.jpg?q=1'';DROP%20TABLE%20hagen.job;--',
	room_label => 'Robert''); DROP TABLE hagen.video_clip;--',
	motion_prompt => E'Glide past the \u00e9tag\u00e8re \U0001F3E0 \u05D1\u05D9\u05EA -- \\x00') IS NOT NULL AS stored;
SELECT source_image_url, room_label, motion_prompt, length(motion_prompt) AS chars
FROM hagen.video_clip WHERE project_id = :'p';
SELECT to_regclass('hagen.job') IS NOT NULL AS job_table_still_there,
	   to_regclass('hagen.video_clip') IS NOT NULL AS clip_table_still_there;

-- NULL in every argument of every API function, one at a time (the others
-- valid): each gives an error naming the argument, or uses its default.
SELECT hagen.add_clip(:'p', 'https://img.example/null-sweep.jpg') AS c \gset
CREATE TEMP TABLE api (f regprocedure, args text[]);
INSERT INTO api VALUES
	('hagen.create_project(text,text,text,boolean,uuid,real,real,jsonb,real,text,text)',
	 ARRAY['''ws-null''', '''16:9''', '''fal''', 'false', 'NULL', '0.3', '1', '''{}''', '0.5', '''prop-1''', '''crop''']),
	('hagen.update_project(uuid,text,text,boolean,uuid,real,real,jsonb,real,text,text,boolean)',
	 ARRAY[quote_literal(:'p'), '''9:16''', '''fal''', 'false', 'NULL', '0.3', '1', '''{}''', '0.5', '''prop-2''', '''pad''', 'false']),
	('hagen.move_clip(uuid,integer)', ARRAY[quote_literal(:'c'), '0']),
	('hagen.remove_clip(uuid)', ARRAY['NULL']),
	('hagen.delete_project(uuid)', ARRAY['NULL']),
	('hagen.list_projects(text,integer,timestamptz)', ARRAY['''ws-null''', '10', 'now()']),
	('hagen.workspace_budget_status(text)', ARRAY['''ws-null''']),
	('hagen.add_clip(uuid,text,text,text,text,text,real,text,integer,text)',
	 ARRAY[quote_literal(:'p'), '''https://img.example/n.jpg''', 'NULL', '''kitchen''', '''K''', '''slow''', '5', '''cut''', 'NULL', '''img''']),
	('hagen.add_music_track(text,text,text,text,real,text)',
	 ARRAY['''Song''', '''https://m.example/s.mp3''', '''modern''', '''calm''', '60', '''ws-null''']),
	('hagen.start_video(uuid)', ARRAY['NULL']),
	('hagen.cancel_video(uuid)', ARRAY['NULL']),
	('hagen.retry_video(uuid)', ARRAY['NULL']),
	('hagen.video_status(uuid)', ARRAY['NULL']),
	('hagen.get_video_path(text,uuid,text)', ARRAY['''ws''', quote_literal(:'p'), '''final.mp4''']),
	('hagen.presign_url(text,text,interval,timestamptz)', ARRAY['''ws/x.mp4''', '''GET''', '''1 hour''', 'now()']),
	('hagen.public_url(text)', ARRAY['''ws/x.mp4''']),
	('hagen.provider_configured(text)', ARRAY['''fal''']);
SELECT a.f::regproc AS function, i AS arg, t.err(format('SELECT %s(%s)', a.f::regproc,
		array_to_string(a.args[:i - 1] || 'NULL'::text || a.args[i + 1:], ', '))) AS with_null
FROM api a, generate_subscripts(a.args, 1) i
ORDER BY i, a.f::regproc::text COLLATE "C";

-- Nothing stored before was lost: the rows outside this test's projects
-- are exactly those of before (the NULL sweep added four music tracks).
SELECT (SELECT count(*) FROM hagen.video_project
		WHERE workspace_id NOT IN ('ws-hostile', 'ws-null')) = b.projects AS projects_kept,
	   (SELECT count(*) FROM hagen.video_clip c JOIN hagen.video_project v ON v.id = c.project_id
		WHERE v.workspace_id NOT IN ('ws-hostile', 'ws-null')) = b.clips AS clips_kept,
	   (SELECT count(*) FROM hagen.music_track) = b.tracks + 4 AS tracks_kept
FROM before b;
DELETE FROM hagen.music_track WHERE name = 'Song';
DELETE FROM hagen.video_project WHERE workspace_id IN ('ws-hostile', 'ws-null');
