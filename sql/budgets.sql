-- Budgets: hagen.max_clips_per_project, hagen.max_project_cents and a
-- workspace's cents per day.  start_video and retry_video refuse a run that
-- would pass one, naming the estimate, the limit and what the workspace has
-- spent today, and queue nothing; a limit exactly reached is not passed.
-- Uses the helpers of the api, engine and rooms tests.
\pset null '(null)'
DELETE FROM t.script;
SHOW hagen.max_clips_per_project;
SHOW hagen.max_project_cents;
-- What a start left behind: the project's status and its jobs.
CREATE FUNCTION t.queued(p uuid) RETURNS text LANGUAGE sql AS $$
	SELECT status || ', ' || (SELECT count(*) FROM hagen.job j WHERE j.project_id = p) || ' jobs'
	FROM hagen.video_project WHERE id = p;
$$;
\pset format unaligned
\pset tuples_only on

-- 1. Clips per project: add_clip stops at the limit; a project made
-- under a higher limit is refused at start.
SET hagen.max_clips_per_project = 3;
SELECT t.project_with('ws-b0', ARRAY['{}', '{}', '{}']::jsonb[]) AS p0 \gset
SELECT t.err(format('SELECT hagen.add_clip(%L, %L)', :'p0', 'https://img.example.com/4.jpg'));
SET hagen.max_clips_per_project = 2;
SELECT t.err(format('SELECT hagen.start_video(%L)', :'p0'));
SELECT t.queued(:'p0');
RESET hagen.max_clips_per_project;

-- 2. Cents per project: three 5 s clips cost 105 cents; a limit of 104 is
-- passed, one of 105 exactly reached.
SET hagen.max_project_cents = 104;
SELECT t.err(format('SELECT hagen.start_video(%L)', :'p0'));
SELECT t.queued(:'p0');
SET hagen.max_project_cents = 105;
SELECT hagen.start_video(:'p0') ->> 'run_cost_cents';
SELECT t.queued(:'p0');
RESET hagen.max_project_cents;

-- 3. Cents per workspace per day: what is spent and what runs in flight
-- are estimated to cost count together.
INSERT INTO hagen.workspace_budget VALUES ('ws-b1', 200);
SELECT t.project_with('ws-b1', ARRAY['{}', '{}', '{}']::jsonb[]) AS pa \gset
SELECT t.project_with('ws-b1', ARRAY['{}', '{}', '{}']::jsonb[]) AS pb \gset
SELECT hagen.start_video(:'pa') ->> 'run_cost_cents';
SELECT hagen.workspace_budget_status('ws-b1') - 'day';
SELECT t.err(format('SELECT hagen.start_video(%L)', :'pb'));
SELECT t.queued(:'pb');
-- Once paid for, the cost moves from in flight to spent; still refused.
SELECT t.run() > 0;
SELECT status, actual_cost_cents FROM hagen.video_project WHERE id = :'pa';
SELECT workspace_id, day = (now() AT TIME ZONE 'UTC')::date, cents FROM hagen.workspace_spending WHERE workspace_id = 'ws-b1';
SELECT t.err(format('SELECT hagen.start_video(%L)', :'pb'));
-- Deleting the project gives no money back.
SELECT hagen.delete_project(:'pa') ->> 'deleted';
DELETE FROM hagen.job WHERE kind = 'purge';
SELECT hagen.workspace_budget_status('ws-b1') -> 'spent_cents';
SELECT t.err(format('SELECT hagen.start_video(%L)', :'pb'));
-- A budget exactly reached is not passed.
UPDATE hagen.workspace_budget SET cents_per_day = 210 WHERE workspace_id = 'ws-b1';
SELECT hagen.start_video(:'pb') ->> 'run_cost_cents';
SELECT hagen.workspace_budget_status('ws-b1') - 'day';
SELECT t.run() > 0;

-- 4. retry_video is held to the same limits and queues nothing when refused.
INSERT INTO hagen.workspace_budget VALUES ('ws-b2', 105);
SELECT t.project_with('ws-b2', ARRAY['{}', '{}', '{}']::jsonb[]) AS pc \gset
INSERT INTO t.script (kind, clip_seq, step, outcome) VALUES
	('clip', 1, 'result', '{"status": 422, "body_text": "{\"detail\": [{\"msg\": \"no media generated\", \"type\": \"no_media_generated\"}]}"}');
SELECT hagen.start_video(:'pc') ->> 'run_cost_cents';
SELECT t.run() > 0;
SELECT status, completed_clips, failed_clips, actual_cost_cents FROM hagen.video_project WHERE id = :'pc';
UPDATE hagen.workspace_budget SET cents_per_day = 104 WHERE workspace_id = 'ws-b2';
SELECT t.err(format('SELECT hagen.retry_video(%L)', :'pc'));
SELECT status, (SELECT count(*) FROM hagen.job j WHERE j.project_id = :'pc' AND j.status = 'queued') AS queued,
	   (SELECT string_agg(c.status, ',' ORDER BY c.sequence_order) FROM hagen.video_clip c WHERE c.project_id = :'pc') AS clips
FROM hagen.video_project WHERE id = :'pc';
UPDATE hagen.workspace_budget SET cents_per_day = 105 WHERE workspace_id = 'ws-b2';
SELECT hagen.retry_video(:'pc') ->> 'run_cost_cents';
SELECT t.run() > 0;
SELECT status, actual_cost_cents FROM hagen.video_project WHERE id = :'pc';
SELECT hagen.workspace_budget_status('ws-b2') - 'day';

-- 5. Only a superuser sets the limits; a tenant sees its own budget only.
CREATE ROLE hk_budget_tenant LOGIN IN ROLE hagen_user;
GRANT USAGE ON SCHEMA t TO hk_budget_tenant;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA t TO hk_budget_tenant;
INSERT INTO hagen.workspace_role VALUES ('ws-b1', 'hk_budget_tenant');
SET SESSION AUTHORIZATION hk_budget_tenant;
SELECT t.err('SET hagen.max_project_cents = 0');
SELECT t.err('SET hagen.max_clips_per_project = 1000');
SELECT hagen.workspace_budget_status('ws-b1') -> 'cents_per_day';
SELECT t.err($$SELECT hagen.workspace_budget_status('ws-b2')$$);
SELECT t.err($$INSERT INTO hagen.workspace_budget VALUES ('ws-b1', 100000)$$);
RESET SESSION AUTHORIZATION;
SELECT t.err($$SELECT hagen.workspace_budget_status(NULL)$$);
\pset format aligned
\pset tuples_only off
DELETE FROM hagen.workspace_role WHERE role_name = 'hk_budget_tenant';
REVOKE ALL ON SCHEMA t FROM hk_budget_tenant;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA t FROM hk_budget_tenant;
DROP ROLE hk_budget_tenant;
DELETE FROM hagen.video_project WHERE workspace_id IN ('ws-b0', 'ws-b1', 'ws-b2');
DELETE FROM hagen.job WHERE project_id IS NULL;
DELETE FROM hagen.workspace_budget;
DELETE FROM hagen.workspace_spending;
DELETE FROM t.script;
