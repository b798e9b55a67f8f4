-- Models as data: each model's input field names, clip lengths, image
-- limits and prices; requests built from them; a model with no row
-- refused; costs estimated per run, and xAI's own figure when it gives one.
-- Uses the helpers of the api, engine and rooms tests.
\pset null '(null)'
DELETE FROM t.script;

-- The rows, priced from the providers' pages.
SELECT provider, model, resolution, hagen._model_fields(m) AS fields, durations,
	   cents_per_second AS silent, cents_per_second_audio AS with_sound, max_image_side, max_image_bytes
FROM hagen.video_model m ORDER BY provider, model, resolution;

-- The request body each model gets for the same clip: its own field names
-- only (Fal answers any other field with a 422), sound always explicit.
SELECT m.provider, m.model, m.resolution,
	   hagen._model_input(jsonb_build_object('model', m.model, 'fields', hagen._model_fields(m),
			'resolution', m.resolution, 'start_image', 'https://cdn.example/a.jpg',
			'end_image', 'https://cdn.example/b.jpg', 'prompt', 'Slow push-in', 'duration', 10,
			'negative_prompt', 'blur', 'aspect_ratio', '9:16', 'audio', true), m.provider) AS body
FROM hagen.video_model m ORDER BY 1, 2, 3;
-- A job queued before its model's fields were kept in its state is built
-- from the model's row.
SELECT hagen._model_input('{"model": "fal-ai/kling-video/v2.1/pro/image-to-video", "start_image": "https://cdn.example/a.jpg", "prompt": "p", "duration": 5}', 'fal') AS from_the_row;

-- What a Fal project sends, end to end through the engine: the uploaded
-- images under the model's names.
SELECT t.project_with('ws-models', ARRAY['{"duration": 10}', '{"transition_type": "seamless"}', '{}']::jsonb[],
					  audio => true) AS p \gset
SELECT r -> 'estimated_cost_cents' AS estimate, r -> 'run_cost_cents' AS run_cost
FROM hagen.start_video(:'p') AS r;
SELECT t.upload_images() > 0 AS images_uploaded;
SELECT c.sequence_order AS seq, j.kind, (e.effect -> 'body') - 'prompt'::text AS body
FROM hagen.claim_jobs('http', 10) e JOIN hagen.job j ON j.id = e.job_id JOIN hagen.video_clip c ON c.id = j.clip_id
ORDER BY 1, 2;
UPDATE hagen.job SET status = 'queued', lease_token = NULL WHERE status = 'running';
SELECT hagen.cancel_video(:'p') ->> 'status' AS status;

-- An xAI project: the resolution it is priced at is the one it asks for;
-- the cost of a clip is what xAI says it charged when it says so.
SELECT t.project_with('ws-models', ARRAY['{}', '{"duration": 10}']::jsonb[], provider => 'xai') AS px \gset
SELECT r -> 'estimated_cost_cents' AS estimate_at_720p FROM hagen.start_video(:'px') AS r;
INSERT INTO t.script (kind, clip_seq, step, outcome) VALUES
	('clip', 0, 'poll', '{"status": 200, "body_text": "{\"status\": \"done\", \"video\": {\"url\": \"https://vidgen.x.ai/a.mp4\", \"duration\": 5, \"respect_moderation\": true}, \"model\": \"grok-imagine-video\", \"usage\": {\"cost_in_usd_ticks\": 3520000000}, \"progress\": 100}"}');
SELECT t.run() > 0 AS ran;
SELECT c.sequence_order AS seq, c.cost_cents, j.state -> 'actual_cost_cents' AS charged, j.state -> 'cost_cents' AS estimated
FROM hagen.video_clip c JOIN hagen.job j ON j.clip_id = c.id AND j.kind = 'clip'
WHERE c.project_id = :'px' ORDER BY 1;
SELECT status, estimated_cost_cents, actual_cost_cents FROM hagen.video_project WHERE id = :'px';

-- A retry's estimate counts only what it generates: here one clip (the
-- transition and the other clips are done); the project's estimate is what
-- it cost so far plus that.
SELECT t.project_with('ws-models', ARRAY['{"transition_type": "seamless"}', '{}', '{}']::jsonb[]) AS pr \gset
INSERT INTO t.script (kind, clip_seq, step, outcome) VALUES
	('clip', 2, 'result', '{"status": 422, "body_text": "{\"detail\": [{\"msg\": \"no media generated\", \"type\": \"no_media_generated\"}]}"}');
SELECT r -> 'estimated_cost_cents' AS first_estimate, r -> 'run_cost_cents' AS first_run FROM hagen.start_video(:'pr') AS r;
SELECT t.run() > 0 AS ran;
SELECT status, completed_clips, actual_cost_cents FROM hagen.video_project WHERE id = :'pr';
SELECT r -> 'estimated_cost_cents' AS estimate, r -> 'run_cost_cents' AS run_cost, r -> 'enqueued_jobs' AS jobs
FROM hagen.retry_video(:'pr') AS r;
SELECT t.run() > 0 AS ran;
SELECT status, estimated_cost_cents, actual_cost_cents FROM hagen.video_project WHERE id = :'pr';

-- start_video refuses what the model cannot do, before anything is queued:
-- a model with no row (no price, no field names), sound from a silent
-- model, a clip length it does not make.
SELECT t.project_with('ws-models', ARRAY['{"duration": 10}']::jsonb[], audio => true) AS pb \gset
\pset format unaligned
\pset tuples_only on
BEGIN;
DELETE FROM hagen.video_model WHERE model = 'fal-ai/kling-video/v2.6/pro/image-to-video';
SELECT t.err(format('SELECT hagen.start_video(%L)', :'pb'));
ROLLBACK;
BEGIN;
DELETE FROM hagen.video_model WHERE model = 'grok-imagine-video' AND resolution = '720p';
SELECT t.err(format('SELECT hagen.start_video(%L)', t.project_with('ws-models', ARRAY['{}']::jsonb[], provider => 'xai')));
ROLLBACK;
BEGIN;
UPDATE hagen.video_model SET audio_field = NULL, cents_per_second_audio = NULL
WHERE model = 'fal-ai/kling-video/v2.6/pro/image-to-video';
SELECT t.err(format('SELECT hagen.start_video(%L)', :'pb'));
ROLLBACK;
BEGIN;
UPDATE hagen.video_model SET durations = '{5}' WHERE model = 'fal-ai/kling-video/v2.6/pro/image-to-video';
SELECT t.err(format('SELECT hagen.start_video(%L)', :'pb'));
ROLLBACK;
\pset format aligned
\pset tuples_only off
SELECT status, (SELECT count(*) FROM hagen.job WHERE project_id = :'pb') AS jobs
FROM hagen.video_project WHERE id = :'pb';
-- Bad rows are refused.
\set VERBOSITY terse
INSERT INTO hagen.video_model VALUES ('fal', 'x', '1080p', 'image url', NULL, NULL, NULL, NULL, NULL, NULL, '{5}', 1920, 1, 1, NULL);
INSERT INTO hagen.video_model VALUES ('fal', 'x', '1080p', 'image_url', NULL, 'generate_audio', NULL, NULL, NULL, NULL, '{5}', 1920, 1, 1, NULL);
INSERT INTO hagen.video_model VALUES ('fal', 'x', '1080p', 'image_url', NULL, NULL, NULL, NULL, NULL, NULL, '{}', 1920, 1, 1, NULL);
INSERT INTO hagen.video_model VALUES ('fal', 'fal-ai/kling-video/v2.6/pro/image-to-video', '720p', 'image_url', NULL, NULL, NULL, NULL, NULL, NULL, '{5}', 1920, 1, 1, NULL);
\set VERBOSITY default

DELETE FROM hagen.video_project WHERE workspace_id = 'ws-models';
DELETE FROM hagen.job WHERE project_id IS NULL;
DELETE FROM t.script;
