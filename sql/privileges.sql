-- Roles, privileges, SECURITY DEFINER and row-level security by workspace,
-- and secrets out of reach of non-superusers.
GRANT USAGE ON SCHEMA t TO PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA t TO PUBLIC;
CREATE ROLE hk_nobody LOGIN;
CREATE ROLE hk_app LOGIN IN ROLE hagen_user;
CREATE ROLE hk_tenant_a LOGIN IN ROLE hagen_user;
CREATE ROLE hk_tenant_b LOGIN IN ROLE hagen_user;
CREATE ROLE hk_ops LOGIN IN ROLE hagen_operator;
INSERT INTO hagen.workspace_role VALUES ('ws-a', 'hk_tenant_a'), ('ws-b', 'hk_tenant_b');

-- Nothing of the extension is granted to PUBLIC.
-- (A function with no ACL at all is executable by PUBLIC.)
SELECT (SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a
		WHERE c.relnamespace = 'hagen'::regnamespace AND a.grantee = 0) AS tables_granted_to_public,
	   (SELECT count(*) FROM pg_proc p LEFT JOIN LATERAL aclexplode(p.proacl) a ON true
		WHERE p.pronamespace = 'hagen'::regnamespace AND (p.proacl IS NULL OR a.grantee = 0))
	   AS functions_granted_to_public;
-- The public API runs as the owner with a fixed search_path.
SELECT p.oid::regprocedure AS api, p.prosecdef, p.proconfig
FROM pg_proc p WHERE p.pronamespace = 'hagen'::regnamespace
  AND has_function_privilege('hagen_user', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text COLLATE "C";
-- Operators get the rest.
SELECT has_table_privilege('hagen_operator', 'hagen.job', 'SELECT') AS ops_read_jobs,
	   has_table_privilege('hagen_user', 'hagen.job', 'SELECT') AS users_read_jobs,
	   has_table_privilege('hagen_operator', 'hagen.video_model', 'UPDATE') AS ops_set_prices,
	   (SELECT bool_or(has_function_privilege('hagen_user', oid, 'EXECUTE')) FROM pg_proc
		WHERE proname IN ('claim_jobs', 'complete_job', 'heartbeat')) AS users_run_workers;

-- Remote compile workers: their five functions (SECURITY DEFINER, fixed
-- search_path) and the schema, nothing else: no table, view or sequence.
SELECT p.oid::regprocedure AS worker_api, p.prosecdef, p.proconfig
FROM pg_proc p WHERE p.pronamespace = 'hagen'::regnamespace
  AND has_function_privilege('hagen_worker', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text COLLATE "C";
SELECT has_schema_privilege('hagen_worker', 'hagen', 'USAGE') AS workers_use_schema,
	   (SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'hagen'::regnamespace
		AND (has_table_privilege('hagen_worker', c.oid, 'SELECT, INSERT, UPDATE, DELETE')
			 OR (c.relkind = 'S' AND has_sequence_privilege('hagen_worker', c.oid, 'USAGE'))))
	   AS relations_workers_touch,
	   pg_has_role('hagen_user', 'hagen_worker', 'MEMBER') AS users_are_workers,
	   has_table_privilege('hagen_operator', 'hagen.compile_workers', 'SELECT') AS ops_see_workers;

-- A role without hagen_user can do nothing.
SET SESSION AUTHORIZATION hk_nobody;
SELECT t.err($$SELECT hagen.create_project('ws-a')$$);
SELECT t.err($$SELECT count(*) FROM hagen.video_project$$);
SELECT t.err($$SELECT hagen.claim_jobs('http', 10, 60)$$);
RESET SESSION AUTHORIZATION;

-- A tenant uses its own workspace only.
SET SESSION AUTHORIZATION hk_tenant_a;
SELECT hagen.create_project('ws-a', metadata => '{"listing": "A"}') IS NOT NULL AS created_in_own;
SELECT t.err($$SELECT hagen.create_project('ws-b')$$);
SELECT t.err($$SELECT hagen.presign_url('ws-b/videos/x/final.mp4')$$);
SELECT hagen.presign_url('ws-a/videos/x/final.mp4') LIKE 'http://s3.test:9000/videos/ws-a/%' AS presigned_own;
SELECT t.err($$SELECT * FROM hagen.job$$);
SELECT t.err($$INSERT INTO hagen.video_project (workspace_id) VALUES ('ws-a')$$);
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION hk_tenant_b;
SELECT hagen.create_project('ws-b', metadata => '{"listing": "B"}') IS NOT NULL AS created_in_own;
-- b sees only its project, directly and through the API.
SELECT workspace_id, metadata ->> 'listing' AS listing FROM hagen.video_project ORDER BY 1;
SELECT t.err(format('SELECT hagen.video_status(%L)',
	(SELECT id FROM hagen.video_project WHERE workspace_id = 'ws-b')));
RESET SESSION AUTHORIZATION;
SELECT t.err(format('SELECT hagen.video_status(%L)', id)) AS a_status_as_superuser
FROM hagen.video_project WHERE workspace_id = 'ws-a';
SELECT format('SELECT hagen.add_clip(%L, %L)', id, 'https://img.example.com/1.jpg') AS q
FROM hagen.video_project WHERE workspace_id = 'ws-a' \gset
SELECT format('SELECT hagen.video_status(%L)', id) AS s
FROM hagen.video_project WHERE workspace_id = 'ws-a' \gset
SELECT t.err(:'q') AS superuser_adds_to_a;
SET SESSION AUTHORIZATION hk_tenant_b;
SELECT t.err(:'q') AS b_adds_to_a;
SELECT t.err(:'s') AS b_reads_a_status;
SELECT count(*) AS clips_b_sees FROM hagen.video_clip;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION hk_tenant_a;
SELECT count(*) AS clips_a_sees FROM hagen.video_clip;
RESET SESSION AUTHORIZATION;

-- Managing projects goes through the same rules: a tenant changes, lists,
-- reorders, removes and deletes in its own workspace only; another's
-- project or clip is refused as if it were not its to see.
SET SESSION AUTHORIZATION hk_tenant_a;
SELECT hagen.create_project('ws-a', property_id => 'a-2') AS pa \gset
SELECT hagen.add_clip(:'pa', 'https://img.example.com/a1.jpg', room_label => 'one') AS ca1 \gset
SELECT hagen.add_clip(:'pa', 'https://img.example.com/a2.jpg', room_label => 'two') AS ca2 \gset
SELECT hagen.update_project(:'pa', aspect_ratio => '9:16') -> 'changed' AS a_changes_own;
SELECT hagen.move_clip(:'ca2', 0) -> 'clip_count' AS a_moves_own;
SELECT room_label FROM hagen.video_clip WHERE project_id = :'pa' ORDER BY sequence_order;
SELECT property_id, aspect_ratio FROM hagen.list_projects('ws-a') ORDER BY created_at;
SELECT t.err($$SELECT * FROM hagen.list_projects('ws-b')$$) AS a_lists_b;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION hk_tenant_b;
SELECT t.err(format('SELECT hagen.update_project(%L, aspect_ratio => %L)', :'pa', '1:1')) AS b_changes_a;
SELECT t.err(format('SELECT hagen.remove_clip(%L)', :'ca1')) AS b_removes_as_clip;
SELECT t.err(format('SELECT hagen.move_clip(%L, 1)', :'ca1')) AS b_moves_as_clip;
SELECT t.err(format('SELECT hagen.delete_project(%L)', :'pa')) AS b_deletes_a;
SELECT t.err($$SELECT * FROM hagen.list_projects('ws-a')$$) AS b_lists_a;
SELECT count(*) AS b_lists_own FROM hagen.list_projects('ws-b');
RESET SESSION AUTHORIZATION;
SELECT count(*) AS a_clips_after_b_tried FROM hagen.video_clip WHERE project_id = :'pa';
SET SESSION AUTHORIZATION hk_tenant_a;
SELECT hagen.remove_clip(:'ca1') -> 'clip_count' AS a_removes_own;
SELECT hagen.delete_project(:'pa') ->> 'deleted' AS a_deletes_own;
SELECT count(*) AS a_sees_it FROM hagen.video_project WHERE id = :'pa';
RESET SESSION AUTHORIZATION;
SELECT count(*) AS gone FROM hagen.video_project WHERE id = :'pa';

-- An app role that is not a tenant may use every workspace; operators see all.
SET SESSION AUTHORIZATION hk_app;
SELECT hagen.create_project('ws-other') IS NOT NULL AS app_creates_anywhere;
SELECT count(*) AS app_sees FROM hagen.video_project WHERE workspace_id IN ('ws-a', 'ws-b', 'ws-other');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION hk_ops;
SELECT count(*) AS ops_see FROM hagen.video_project WHERE workspace_id IN ('ws-a', 'ws-b', 'ws-other');
SELECT count(*) >= 0 AS ops_read_jobs FROM hagen.job;
RESET SESSION AUTHORIZATION;

-- Secrets: a non-superuser cannot read them at all (SHOW, current_setting,
-- pg_settings), nor set them.
SET SESSION AUTHORIZATION hk_app;
SHOW hagen.fal_key;
SELECT current_setting('hagen.s3_secret_access_key') AS s3_secret, current_setting('hagen.xai_key') AS xai_key;
SELECT name, setting FROM pg_settings WHERE name IN ('hagen.fal_key', 'hagen.xai_key', 'hagen.s3_secret_access_key') ORDER BY 1;
SELECT t.err($$SET hagen.fal_key = 'x'$$);
SELECT count(*) AS activity_rows_with_secrets FROM pg_stat_activity
WHERE strpos(query, 'test-key-' || 'secret') > 0 OR strpos(query, 'test-secret' || '-value') > 0
   OR strpos(query, 'xai-test' || '-key') > 0;
RESET SESSION AUTHORIZATION;

DELETE FROM hagen.video_project WHERE workspace_id IN ('ws-a', 'ws-b', 'ws-other');
DELETE FROM hagen.workspace_role;
DROP ROLE hk_nobody, hk_app, hk_tenant_a, hk_tenant_b, hk_ops;
