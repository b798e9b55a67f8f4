-- Framing: before a photo goes to the provider it is fitted to the
-- project's aspect ratio by hagen-compile on the compile lane (crop or pad),
-- then uploaded to Fal storage or stored in the bucket for xAI behind a
-- presigned URL; framing none sends it as it is.  Uses the helpers of the
-- api, engine and rooms tests.
\pset null '(null)'
DELETE FROM t.script;
-- Masks uuids and job ids in work file names and keys.
CREATE FUNCTION t.maskj(s text) RETURNS text LANGUAGE sql IMMUTABLE
	RETURN regexp_replace(t.mask(s), '(images/|image_)[0-9]+_', '\1<job>_', 'g');
-- Where each job of a project stands: its step and lane.
CREATE FUNCTION t.steps(p uuid) RETURNS TABLE (seq integer, kind text, step text, lane text, status text)
LANGUAGE sql AS $$
	SELECT c.sequence_order, j.kind, j.step, j.lane, j.status
	FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id
	WHERE j.project_id = p AND j.kind IN ('clip', 'transition') ORDER BY 1, 2;
$$;

-- 1. A 9:16 Fal project of landscape photos (crop, the default): fetched,
-- fitted on the compile lane, uploaded as a JPEG, then submitted.
SELECT t.project_with('ws-frame', ARRAY['{"transition_type": "seamless"}', '{}']::jsonb[], framing => 'crop') AS p \gset
UPDATE hagen.video_project SET aspect_ratio = '9:16' WHERE id = :'p';
SELECT framing FROM hagen.video_project WHERE id = :'p';
SELECT hagen.start_video(:'p') ->> 'status' AS status;
SELECT * FROM t.steps(:'p');
SELECT (e.effect ->> 'max_bytes')::bigint / 1048576 AS fetch_max_mib, e.effect ->> 'url' AS url
FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT kind, seq, step, next_step, status FROM t.tick('http') ORDER BY 1, 2;
SELECT * FROM t.steps(:'p');
-- The fitting effect, as a compile worker gets it.
SELECT e.effect - 'input' - 'output' AS effect, t.maskj(e.effect ->> 'input') AS input,
	   t.maskj(e.effect ->> 'output') AS output
FROM hagen.claim_jobs('compile', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT kind, seq, step, next_step, status FROM t.tick('compile') ORDER BY 1, 2;
SELECT * FROM t.steps(:'p');
-- Each fitted photo goes to Fal storage as a JPEG; the transition's two
-- photos each take their turn (fetch, fit, upload); then the submits, and
-- on to the video.
SELECT e.effect -> 'body' AS initiate FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT t.run() > 0 AS ran;
SELECT c.sequence_order AS seq, j.kind, j.status, j.state -> 'images' -> 0 ->> 'file_name' AS first_image,
	   j.state -> 'images' -> 0 -> 'width' AS w, j.state -> 'images' -> 0 -> 'height' AS h,
	   j.state ->> 'start_image' LIKE 'https://v3.fal.media/files/%.jpg' AS start_on_fal,
	   jsonb_array_length(j.state -> 'images') AS images
FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id WHERE j.project_id = :'p' ORDER BY 1, 2;
SELECT status FROM hagen.video_project WHERE id = :'p';
SELECT message FROM hagen.job_log WHERE project_id = :'p' AND message LIKE 'image %fitted%' ORDER BY id LIMIT 1;

-- (The work-file cleanups of ended projects are no concern here.)
DELETE FROM hagen.job WHERE kind IN ('cleanup', 'purge');

-- 2. xAI, pad: the fitted photo is stored in the bucket beside the clips,
-- and xAI gets a presigned URL of it.
SELECT t.project_with('ws-frame', ARRAY['{}']::jsonb[], provider => 'xai', framing => 'pad') AS px \gset
SELECT hagen.start_video(:'px') ->> 'status' AS status;
SELECT count(*) FROM t.tick('http');
SELECT e.effect ->> 'fit' AS fit, e.effect ->> 'aspect' AS aspect FROM hagen.claim_jobs('compile', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT count(*) FROM t.tick('compile');
SELECT e.effect ->> 'method' AS method, e.effect ->> 'auth' AS auth,
	   t.maskj(e.effect ->> 'url') AS url, t.maskj(e.effect ->> 'body_file') AS body_file,
	   e.effect -> 'headers' AS headers
FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT count(*) FROM t.tick('http');
SELECT e.effect -> 'body' -> 'image' ->> 'url' ~
	   '^http://s3\.test:9000/videos/ws-frame/videos/[0-9a-f-]{36}/image_[0-9]+_0\.jpg\?X-Amz-Algorithm=AWS4-HMAC-SHA256&.*X-Amz-Expires=4800&.*X-Amz-Signature=[0-9a-f]{64}$'
	   AS presigned_image_url
FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT hagen.cancel_video(:'px') ->> 'status' AS canceled;

DELETE FROM hagen.job WHERE kind IN ('cleanup', 'purge');

-- 3. framing none: xAI gets the photo's own URL at once, as before.
SELECT t.project_with('ws-frame', ARRAY['{}']::jsonb[], provider => 'xai', framing => 'none') AS pn \gset
SELECT hagen.start_video(:'pn') ->> 'status' AS status;
SELECT * FROM t.steps(:'pn');
SELECT e.effect -> 'body' -> 'image' ->> 'url' AS image_url FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT hagen.cancel_video(:'pn') ->> 'status' AS canceled;

-- 4. A photo hagen-compile cannot read fails its clip, naming it; a crash
-- of the helper is tried again (3 times in all).
SELECT t.project_with('ws-frame', ARRAY['{}', '{}']::jsonb[], framing => 'crop') AS pf \gset
INSERT INTO t.script (kind, clip_seq, step, outcome, times) VALUES
	('clip', 0, 'image_frame', '{"status": "error", "kind": "input", "error": "the photo cannot be read (images_1): not a JPEG, PNG, WebP or GIF image, or damaged"}', 1),
	('clip', 1, 'image_frame', '{"status": "error", "kind": "crash", "error": "hagen-compile image crashed (signal 11: Segmentation fault)"}', 5);
SELECT hagen.start_video(:'pf') ->> 'status' AS status;
SELECT t.run() > 0 AS ran;
SELECT sequence_order, status, error_message FROM hagen.video_clip WHERE project_id = :'pf' ORDER BY 1;
SELECT status FROM hagen.video_project WHERE id = :'pf';
DELETE FROM t.script;

DELETE FROM hagen.video_project WHERE workspace_id = 'ws-frame';
DELETE FROM hagen.job WHERE project_id IS NULL;
