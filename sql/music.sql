-- Music per tenant: a track belongs to a workspace or is shared by all;
-- tenants add and see their own (and the shared ones) and use no other's;
-- the app's categories; a URL that can never be fetched is refused when
-- the track is added.  Uses the helpers of the api test.
\pset null '(null)'
CREATE ROLE hk_music_a LOGIN IN ROLE hagen_user;
CREATE ROLE hk_music_b LOGIN IN ROLE hagen_user;
GRANT USAGE ON SCHEMA t TO hk_music_a, hk_music_b;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA t TO hk_music_a, hk_music_b;
INSERT INTO hagen.workspace_role VALUES ('ws-ma', 'hk_music_a'), ('ws-mb', 'hk_music_b');

-- 1. Shared tracks (added by a role that is no tenant) and a workspace's own.
SELECT hagen.add_music_track('Shared', 'https://music.example.com/shared.mp3', 'Cinematic') AS shared \gset
SET SESSION AUTHORIZATION hk_music_a;
SELECT hagen.add_music_track('A only', 'https://music.example.com/a.mp3', 'calm', workspace_id => 'ws-ma') AS track_a \gset
\pset format unaligned
\pset tuples_only on
SELECT t.err($$SELECT hagen.add_music_track('A shares', 'https://music.example.com/x.mp3')$$);
SELECT t.err($$SELECT hagen.add_music_track('A in B', 'https://music.example.com/x.mp3', workspace_id => 'ws-mb')$$);
\pset format aligned
\pset tuples_only off
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION hk_music_b;
SELECT hagen.add_music_track('B only', 'https://music.example.com/b.mp3', 'upbeat', workspace_id => 'ws-mb') AS track_b \gset
RESET SESSION AUTHORIZATION;
SELECT name, category, workspace_id FROM hagen.music_track WHERE id IN (:'shared', :'track_a', :'track_b') ORDER BY name;
-- Each tenant sees the shared tracks and its own.
SET SESSION AUTHORIZATION hk_music_a;
SELECT name FROM hagen.music_track WHERE id IN (:'shared', :'track_a', :'track_b') ORDER BY name;
-- and may lay its own or a shared track under its project, not another's.
SELECT hagen.create_project('ws-ma', music_track_id => :'track_a') IS NOT NULL AS own_track;
SELECT hagen.create_project('ws-ma', music_track_id => :'shared') AS pa \gset
\pset format unaligned
\pset tuples_only on
SELECT t.err(format('SELECT hagen.create_project(%L, music_track_id => %L)', 'ws-ma', :'track_b'));
SELECT t.err(format('SELECT hagen.update_project(%L, music_track_id => %L)', :'pa', :'track_b'));
\pset format aligned
\pset tuples_only off
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION hk_music_b;
SELECT name FROM hagen.music_track WHERE id IN (:'shared', :'track_a', :'track_b') ORDER BY name;
RESET SESSION AUTHORIZATION;
-- Nor may an app role that is no tenant, nor a superuser, put one
-- workspace's music in another's project.
\pset format unaligned
\pset tuples_only on
SELECT t.err(format('SELECT hagen.create_project(%L, music_track_id => %L)', 'ws-mb', :'track_a'));
\pset format aligned
\pset tuples_only off

-- 2. The app's categories, in any case; no other.
SELECT hagen.add_music_track(c, 'https://music.example.com/' || lower(btrim(c)) || '.mp3', c) IS NOT NULL AS added, c
FROM unnest(ARRAY['modern', 'Classical', 'UPBEAT', 'calm', ' cinematic ']) c;
SELECT DISTINCT category FROM hagen.music_track WHERE audio_url LIKE 'https://music.example.com/%' ORDER BY 1;
\pset format unaligned
\pset tuples_only on
SELECT t.err($$SELECT hagen.add_music_track('x', 'https://music.example.com/x.mp3', 'jazz')$$);

-- 3. URLs that can never be fetched, refused at once with the reason (the
-- network guard's rules, in every spelling libcurl reads); public ones pass.
SELECT u || ' -> ' || coalesce(hagen._url_refusal(u), 'may be fetched')
FROM unnest(ARRAY['http://127.0.0.1/m.mp3', 'http://2130706433/m.mp3', 'http://0x7f.1/m.mp3',
	'http://127.1:8080/m.mp3', 'http://0177.0.0.1/m.mp3', 'http://[::1]/m.mp3', 'http://[::ffff:127.0.0.1]/m.mp3',
	'http://169.254.169.254/latest/meta-data', 'http://[fd00:ec2::254]/m.mp3', 'http://10.0.0.5/m.mp3',
	'http://192.168.1.2/m.mp3', 'http://172.16.9.9/m.mp3', 'http://100.64.0.1/m.mp3', 'http://0.0.0.0/m.mp3',
	'http://[fe80::1%25eth0]/m.mp3', 'http://localhost/m.mp3', 'http://LOCALHOST./m.mp3', 'http://api.localhost/m.mp3',
	'http://metadata.google.internal/computeMetadata/v1/', 'ftp://music.example.com/m.mp3', 'not a url',
	'https://music.example.com/m.mp3', 'http://93.184.216.34/m.mp3', 'https://[2606:2800:220:1::]/m.mp3',
	'http://s3.test:9000/videos/music.mp3']) u;
SELECT t.err($$SELECT hagen.add_music_track('x', 'http://169.254.169.254/latest/meta-data/iam')$$);
SELECT t.err($$SELECT hagen.add_music_track('x', 'http://0x7f.1:6379/m.mp3')$$);
SELECT t.err($$SELECT hagen.add_music_track('x', 'http://localhost:9000/m.mp3')$$);
SELECT t.err($$SELECT hagen.add_music_track('x', 'gopher://127.0.0.1:6379/_FLUSHALL')$$);
-- A host listed in hagen.trusted_hosts (with its port) may be private.
ALTER SYSTEM SET hagen.trusted_hosts = '10.1.2.3:8080';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW hagen.trusted_hosts;
SELECT hagen._url_refusal('http://10.1.2.3:8080/m.mp3') IS NULL AS trusted_port,
	   hagen._url_refusal('http://10.1.2.3:8081/m.mp3') AS other_port;
SELECT hagen.add_music_track('On the LAN', 'http://10.1.2.3:8080/m.mp3') IS NOT NULL AS added;
ALTER SYSTEM RESET hagen.trusted_hosts;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
\pset format aligned
\pset tuples_only off

DELETE FROM hagen.video_project WHERE workspace_id IN ('ws-ma', 'ws-mb');
DELETE FROM hagen.music_track WHERE audio_url LIKE 'https://music.example.com/%' OR audio_url LIKE 'http://10.1.2.3%';
DELETE FROM hagen.workspace_role WHERE role_name IN ('hk_music_a', 'hk_music_b');
REVOKE ALL ON SCHEMA t FROM hk_music_a, hk_music_b;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA t FROM hk_music_a, hk_music_b;
DROP ROLE hk_music_a, hk_music_b;
