-- The public API: creating projects, clips and music tracks, and the
-- validation errors bad input gets.
CREATE EXTENSION hagenkit;
\set VERBOSITY default

-- What the extension installs.
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       pg_get_function_result(p.oid) AS result
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'hagen' AND p.proname NOT LIKE '\_%'
ORDER BY 1, 2;
SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'hagen' AND relkind = 'r' ORDER BY 1;

-- A music track and a project.
SELECT hagen.add_music_track('Calm piano', 'https://music.example.com/calm.mp3', 'classical', 'calm', 62.5) IS NOT NULL AS track_made;
SELECT id AS track FROM hagen.music_track \gset
SELECT hagen.create_project('ws-1', '9:16', 'fal', true, :'track', 0.25, 0.9, '{"listing": 42}') AS project \gset
SELECT workspace_id, status, aspect_ratio, provider, generate_native_audio, music_volume,
       video_volume, clip_count, progress, metadata
FROM hagen.video_project WHERE id = :'project';

-- Defaults.
SELECT hagen.create_project('ws-defaults') AS dflt \gset
SELECT aspect_ratio, provider, generate_native_audio, music_volume, video_volume, crossfade
FROM hagen.video_project WHERE id = :'dflt';

-- Clips: appended in order, explicit positions, defaults.
SELECT hagen.add_clip(:'project', 'https://img.example.com/front.jpg', room_type => 'exterior') AS c0 \gset
SELECT hagen.add_clip(:'project', 'https://img.example.com/living.jpg', 'https://img.example.com/living-end.jpg',
                      'living_room', 'Living room', 'Slow pan left', 10, 'seamless') AS c1 \gset
SELECT hagen.add_clip(:'project', 'https://img.example.com/kitchen.jpg', sequence_order => 7, image_id => 'img-7') AS c7 \gset
SELECT hagen.add_clip(:'project', 'https://img.example.com/bath.jpg') AS c8 \gset
SELECT sequence_order, room_type, room_label, motion_prompt, duration, transition_type, status, image_id
FROM hagen.video_clip WHERE project_id = :'project' ORDER BY sequence_order;
SELECT clip_count FROM hagen.video_project WHERE id = :'project';

-- Storage paths and public URLs.
SELECT hagen.get_video_path('ws-1', '00000000-0000-0000-0000-000000000001', 'final.mp4');
SELECT hagen.public_url('ws 1/videos/a+b/ünï~code.mp4');
-- Percent-encoding (one encoder, in C, shared with the SigV4 signer): the
-- unreserved characters of RFC 3986 kept, "/" kept when asked, every other
-- byte of the UTF-8 as %XX in upper case.
SELECT v AS value, hagen._uri_encode(v, true) AS keep_slash, hagen._uri_encode(v, false) AS encode_slash
FROM (VALUES ('AZaz09-._~'), ('a/b//c/'), ('/'), (' +%&=?#'), ('ü'), ('日本'), ('🎬'), (E'\t\x01\x7f'), ('')) x(v);
SELECT count(*) AS ascii_mismatches FROM generate_series(1, 127) i
WHERE hagen._uri_encode(chr(i), false)
	  IS DISTINCT FROM CASE WHEN chr(i) ~ '^[A-Za-z0-9._~-]$' THEN chr(i) ELSE '%' || upper(lpad(to_hex(i), 2, '0')) END
   OR hagen._uri_encode(chr(i), true)
	  IS DISTINCT FROM CASE WHEN chr(i) ~ '^[A-Za-z0-9._~/-]$' THEN chr(i) ELSE '%' || upper(lpad(to_hex(i), 2, '0')) END;
SELECT hagen._uri_encode(repeat('ü/', 5000), true) = repeat('%C3%BC/', 5000) AS long_value;

-- Bad input: each error names the value and says what to do.
-- Test helpers, shared with the later regress files.
CREATE SCHEMA t;
-- Masks random uuids in text so that outputs are stable.
CREATE FUNCTION t.mask(s text) RETURNS text LANGUAGE sql IMMUTABLE
	RETURN regexp_replace(s, '[0-9a-f]{8}-[0-9a-f]{4}-[1-9a-f][0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g');
-- Runs a statement and shows the error it raises: SQLSTATE, message, detail, hint.
CREATE FUNCTION t.err(q text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
	st text; msg text; det text; hin text;
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN others THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hin = PG_EXCEPTION_HINT;
	RETURN st || ': ' || t.mask(msg) || coalesce(' | ' || nullif(det, ''), '')
		|| coalesce(' | hint: ' || nullif(hin, ''), '');
END;
$f$;
\pset format unaligned
\pset tuples_only on
SELECT t.err($q$SELECT hagen.create_project('ws', '4:3')$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', '16:9', 'runway')$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', music_volume => 1.5)$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', video_volume => -0.1)$q$);
SELECT t.err($q$SELECT hagen.create_project('')$q$);
SELECT t.err($q$SELECT hagen.create_project(NULL)$q$);
SELECT t.err($q$SELECT hagen.create_project('a/b')$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', metadata => '[1]')$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', crossfade => 0.05)$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', crossfade => 2.5)$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', crossfade => -1)$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', crossfade => NULL)$q$);
SELECT t.err($q$SELECT hagen.create_project('ws', crossfade => 'NaN')$q$);
SELECT hagen.create_project('ws-xf', crossfade => 0.5) AS xf \gset
SELECT crossfade FROM hagen.video_project WHERE id = :'xf';
SELECT t.err($q$SELECT hagen.create_project('ws', music_track_id => '00000000-0000-0000-0000-000000000000')$q$);
SELECT t.err($q$SELECT hagen.add_clip('00000000-0000-0000-0000-000000000000', 'https://img.example.com/x.jpg')$q$);
SELECT t.err($q$SELECT hagen.add_clip(NULL, 'https://img.example.com/x.jpg')$q$);
SELECT t.err(format($q$SELECT hagen.add_clip('%s', 'file:///etc/passwd')$q$, :'project'));
SELECT t.err(format($q$SELECT hagen.add_clip('%s', 'ftp://img.example.com/x.jpg')$q$, :'project'));
SELECT t.err(format($q$SELECT hagen.add_clip('%s', NULL)$q$, :'project'));
SELECT t.err(format($q$SELECT hagen.add_clip('%s', 'https://img.example.com/x.jpg', 'javascript:alert(1)')$q$, :'project'));
SELECT t.err(format($q$SELECT hagen.add_clip('%s', 'https://img.example.com/x.jpg', duration => 7)$q$, :'project'));
SELECT t.err(format($q$SELECT hagen.add_clip('%s', 'https://img.example.com/x.jpg', transition_type => 'wipe')$q$, :'project'));
SELECT t.err(format($q$SELECT hagen.add_clip('%s', 'https://img.example.com/x.jpg', sequence_order => 7)$q$, :'project'));
SELECT t.err(format($q$SELECT hagen.add_clip('%s', 'https://img.example.com/x.jpg', sequence_order => -1)$q$, :'project'));
SELECT t.err(format($q$SELECT hagen.add_clip('%s', 'https://img.example.com/x.jpg', motion_prompt => repeat('x', 2001))$q$, :'project'));
SELECT t.err($q$SELECT hagen.add_music_track('', 'https://music.example.com/a.mp3')$q$);
SELECT t.err($q$SELECT hagen.add_music_track('x', 'not a url')$q$);
SELECT t.err($q$SELECT hagen.add_music_track('x', 'https://music.example.com/a.mp3', duration => 0)$q$);
SELECT t.err($q$SELECT hagen.get_video_path('ws', '00000000-0000-0000-0000-000000000001', '../etc/passwd')$q$);
SELECT t.err($q$SELECT hagen.get_video_path('ws/../x', '00000000-0000-0000-0000-000000000001', 'a.mp4')$q$);
SELECT t.err($q$SELECT hagen.public_url('/leading/slash.mp4')$q$);
SELECT t.err($q$SELECT hagen.public_url('a/../b.mp4')$q$);
SELECT t.err($q$SELECT hagen.video_status('00000000-0000-0000-0000-000000000000')$q$);
SELECT t.err($q$SELECT hagen.start_video('00000000-0000-0000-0000-000000000000')$q$);
SELECT t.err($q$SELECT hagen.start_video(hagen.create_project('ws-empty'))$q$);
\pset format aligned
\pset tuples_only off

-- Nothing stored was lost by the errors above.
SELECT count(*) AS clips FROM hagen.video_clip WHERE project_id = :'project';

-- Secrets never show, to anyone.
SHOW hagen.fal_key;
SELECT current_setting('hagen.s3_secret_access_key') AS secret;
SELECT count(*) AS visible FROM pg_settings WHERE name LIKE 'hagen.%key%' AND setting LIKE '%test%';
-- The four secrets (declared in one table in C): masked when set, kept out
-- of pg_settings.
SELECT n AS name, current_setting(n) AS shown,
	   (SELECT count(*) FROM pg_settings WHERE name = n) AS in_pg_settings
FROM unnest(ARRAY['hagen.fal_key', 'hagen.xai_key', 'hagen.s3_access_key_id', 'hagen.s3_secret_access_key']) n;
SELECT hagen.provider_configured('fal') AS fal, hagen.provider_configured('s3') AS s3;
SELECT hagen.provider_configured('runway');

-- The SigV4 signer against the AWS documentation's examples.
SELECT vector, ok FROM hagen._sigv4_selftest();
SELECT count(*) FILTER (WHERE NOT ok) AS mismatches FROM hagen._sigv4_selftest();
-- Presigned URLs: stable for a given instant, every parameter in place.
SELECT hagen.presign_url('ws 1/videos/p/final.mp4', 'GET', '1 hour', '2026-01-02 03:04:05+00');
SELECT hagen.presign_url('a+b/ü.mp4', 'put', '7 days', '2026-01-02 03:04:05+00') ~
	'^http://s3\.test:9000/videos/a%2Bb/%C3%BC\.mp4\?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDTEST%2F20260102%2Fauto%2Fs3%2Faws4_request&X-Amz-Date=20260102T030405Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host&X-Amz-Signature=[0-9a-f]{64}$' AS well_formed;
SELECT hagen.presign_url('k.mp4', at => '2026-01-02 03:04:05+00') <> hagen.presign_url('k.mp4', at => '2026-01-02 03:04:06+00') AS changes_with_time;
\pset format unaligned
\pset tuples_only on
SELECT t.err($q$SELECT hagen.presign_url('k.mp4', 'POST')$q$);
SELECT t.err($q$SELECT hagen.presign_url('k.mp4', 'GET', '0 seconds')$q$);
SELECT t.err($q$SELECT hagen.presign_url('k.mp4', 'GET', '8 days')$q$);
SELECT t.err($q$SELECT hagen.presign_url('../k.mp4')$q$);
SELECT t.err($q$SELECT hagen.presign_url('a//b.mp4')$q$);
SELECT t.err($q$SELECT hagen.presign_url(repeat('k', 1025))$q$);
SELECT t.err($q$SELECT hagen.presign_url(NULL)$q$);
-- hagen.trusted_hosts: entries are hosts with an optional port, read by
-- libcurl's URL parser; anything else is refused before it is written.
ALTER SYSTEM SET hagen.trusted_hosts = 'assets.internal, a b';
ALTER SYSTEM SET hagen.trusted_hosts = 'user@host';
ALTER SYSTEM SET hagen.trusted_hosts = 'host:99999';
ALTER SYSTEM SET hagen.trusted_hosts = 'http://host/';
ALTER SYSTEM SET hagen.trusted_hosts = '[fd00::1';
\pset format aligned
\pset tuples_only off
