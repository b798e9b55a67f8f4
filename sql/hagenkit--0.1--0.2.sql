-- hagenkit upgrade 0.1 -> 0.2.  Every change to src/sql/ after 0.1 is
-- repeated here, so that ALTER EXTENSION hagenkit UPDATE gives exactly the
-- catalog of a fresh install (test/t/006_upgrade.pl compares them).
\echo Use "ALTER EXTENSION hagenkit UPDATE TO '0.2'" to load this file. \quit

-- pg_dump keeps the user data of the extension's tables (95_dump.sql).
SELECT pg_catalog.pg_extension_config_dump('hagen.music_track', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.video_project', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.video_clip', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.job', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.job_log', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.lease_token_seq', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('hagen.job', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('hagen.job_log', 'id')::regclass, '');

-- A compile error names its segment once, not twice (60_compile.sql).
-- Reads the compile worker's report.  A crash or a failure is retried once,
-- then fails the project with the helper's message (which names the
-- segment it concerns; the number is added when it does not).
CREATE OR REPLACE FUNCTION hagen._compile_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	r jsonb := o -> 'result';
	msg text := coalesce(o ->> 'error', 'the compile worker gave no result');
BEGIN
	IF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object'
	   AND (r ->> 'duration') ~ '^[0-9.]+$' THEN
		RETURN jsonb_build_object('action', 'succeed', 'state', jsonb_build_object(
			'result', r, 'final_key', o ->> 'final_key', 'thumbnail_key', o ->> 'thumbnail_key'));
	END IF;
	IF o ->> 'segment' IS NOT NULL AND msg !~ ('\msegment ' || (o ->> 'segment') || '\M') THEN
		msg := msg || ' (segment ' || (o ->> 'segment') || ')';
	END IF;
	RETURN jsonb_build_object('action', 'retry', 'max_attempts', 2, 'error', 'compile failed: ' || msg);
END;
$$;

