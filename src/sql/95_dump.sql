-- hagenkit install script, part 95: what pg_dump keeps.
--
-- The rows of an extension's tables are not dumped unless the extension
-- says so.  Projects, clips, music, jobs and their logs are user data: a
-- dump and restore of the database must keep them, and the counters behind
-- their ids.  video_model and room_prompt hold seeded rows that CREATE EXTENSION
-- puts back; operators who edit them should keep their edits in their own
-- migrations.
SELECT pg_catalog.pg_extension_config_dump('hagen.music_track', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.video_project', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.video_clip', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.job', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.job_log', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.lease_token_seq', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('hagen.job', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('hagen.job_log', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('hagen.workspace_role', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.workspace_budget', '');
SELECT pg_catalog.pg_extension_config_dump('hagen.workspace_spending', '');
