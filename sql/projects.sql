-- Managing projects: property ids and framing, changing settings,
-- removing and reordering clips, deleting (also while it runs), listing.
-- Uses the helpers of the api, engine and rooms tests.
\pset null '(null)'
-- A clip's place, status and transition, compactly.
CREATE FUNCTION t.clips(p uuid) RETURNS TABLE (seq integer, label text, status text, transition text)
LANGUAGE sql AS $$
	SELECT sequence_order, room_label, status, transition_type || coalesce('/' || transition_status, '')
	FROM hagen.video_clip WHERE project_id = p ORDER BY sequence_order;
$$;
-- A started project of labelled clips A, B, C, D (transitions after A and
-- C), run to completion by the fake provider.
CREATE FUNCTION t.done_project(ws text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	p uuid := t.project_with(ws, ARRAY[
		'{"room_label": "A", "transition_type": "seamless"}', '{"room_label": "B"}',
		'{"room_label": "C", "transition_type": "seamless"}', '{"room_label": "D"}']::jsonb[]);
BEGIN
	PERFORM hagen.start_video(p);
	PERFORM t.run();
	RETURN p;
END;
$$;

-- 1. property_id and framing at creation.
SELECT hagen.create_project('ws-m', property_id => ' prop-17 ', framing => 'pad') AS p1 \gset
SELECT property_id, framing, aspect_ratio FROM hagen.video_project WHERE id = :'p1';
SELECT hagen.create_project('ws-m', property_id => '') AS p0 \gset
SELECT framing, property_id FROM hagen.video_project WHERE id = :'p0';
\pset format unaligned
\pset tuples_only on
SELECT t.err($$SELECT hagen.create_project('ws-m', framing => 'stretch')$$);
SELECT t.err($$SELECT hagen.create_project('ws-m', framing => NULL)$$);
SELECT t.err($$SELECT hagen.create_project('ws-m', property_id => repeat('p', 201))$$);
SELECT t.err($$SELECT hagen.create_project('ws-m', property_id => E'a\nb')$$);
\pset format aligned
\pset tuples_only off
-- Looked up by property through an index.
SELECT indexdef FROM pg_indexes WHERE indexname = 'video_project_property_idx';

-- 2. update_project: NULL keeps a setting; what changed is reported.
SELECT hagen.add_music_track('Calm', 'https://music.example.com/calm.mp3', 'calm') AS m \gset
SELECT r -> 'changed' AS changed, r ->> 'status' AS status
FROM hagen.update_project(:'p1', aspect_ratio => '9:16', music_track_id => :'m', music_volume => 0.5,
						  property_id => 'prop-18', metadata => '{"title": "Elm St"}') AS r;
SELECT aspect_ratio, framing, music_track_id = :'m' AS music, music_volume, property_id, metadata
FROM hagen.video_project WHERE id = :'p1';
SELECT hagen.update_project(:'p1') -> 'changed' AS nothing, hagen.update_project(:'p1', framing => 'pad') -> 'changed' AS same_value;
SELECT hagen.update_project(:'p1', remove_music => true, property_id => '') -> 'changed' AS cleared;
SELECT music_track_id, property_id FROM hagen.video_project WHERE id = :'p1';
\pset format unaligned
\pset tuples_only on
SELECT t.err(format('SELECT hagen.update_project(%L, aspect_ratio => %L)', :'p1', '4:3'));
SELECT t.err(format('SELECT hagen.update_project(%L, framing => %L)', :'p1', 'zoom'));
SELECT t.err(format('SELECT hagen.update_project(%L, crossfade => 3)', :'p1'));
SELECT t.err(format('SELECT hagen.update_project(%L, music_track_id => %L, remove_music => true)', :'p1', :'m'));
SELECT t.err(format('SELECT hagen.update_project(%L, music_track_id => %L)', :'p1', '00000000-0000-0000-0000-000000000000'));
SELECT t.err($$SELECT hagen.update_project('00000000-0000-0000-0000-000000000000', aspect_ratio => '1:1')$$);
\pset format aligned
\pset tuples_only off

-- A finished project: a change of its video's settings sends it back to
-- pending; a new shape makes every clip and transition again, new sound
-- every clip, music or metadata none.
SELECT t.done_project('ws-m') AS p2 \gset
SELECT status, completed_clips FROM hagen.video_project WHERE id = :'p2';
SELECT hagen.update_project(:'p2', metadata => '{"note": "renamed"}') ->> 'status' AS after_metadata;
SELECT hagen.update_project(:'p2', video_volume => 0.5) ->> 'status' AS after_volume;
SELECT * FROM t.clips(:'p2');
SELECT hagen.start_video(:'p2') -> 'enqueued_jobs' AS jobs_for_a_remix;
SELECT t.run() > 0 AS ran;
SELECT status FROM hagen.video_project WHERE id = :'p2';
SELECT hagen.update_project(:'p2', generate_native_audio => true) -> 'changed' AS changed;
SELECT * FROM t.clips(:'p2');
SELECT hagen.update_project(:'p2', aspect_ratio => '9:16') ->> 'completed_clips' AS completed_clips;
SELECT * FROM t.clips(:'p2');
SELECT hagen.start_video(:'p2') -> 'enqueued_jobs' AS jobs_for_a_new_shape;
-- ... but not while it runs.
\pset format unaligned
\pset tuples_only on
SELECT t.err(format('SELECT hagen.update_project(%L, crossfade => 0.5)', :'p2'));
SELECT t.err(format('SELECT hagen.remove_clip(%L)', (SELECT id FROM hagen.video_clip WHERE project_id = :'p2' LIMIT 1)));
SELECT t.err(format('SELECT hagen.move_clip(%L, 0)', (SELECT id FROM hagen.video_clip WHERE project_id = :'p2' AND sequence_order = 3)));
SELECT hagen.cancel_video(:'p2') ->> 'status';
-- nor while the canceled run's steps are still in flight
UPDATE hagen.job SET status = 'running' WHERE id = (SELECT max(id) FROM hagen.job WHERE project_id = :'p2' AND kind = 'clip');
SELECT t.err(format('SELECT hagen.update_project(%L, crossfade => 0.5)', :'p2'));
UPDATE hagen.job SET status = 'canceled' WHERE project_id = :'p2' AND status = 'running';
SELECT hagen.update_project(:'p2', crossfade => 0.5) -> 'changed';
\pset format aligned
\pset tuples_only off

-- 3. remove_clip and move_clip on a finished project: positions stay
-- 0..n-1, a transition whose next clip changed is made again, the others
-- are kept, and the project goes back to pending.
SELECT t.done_project('ws-m') AS p3 \gset
SELECT * FROM t.clips(:'p3');
SELECT r ->> 'status' AS status, r -> 'clip_count' AS clips
FROM hagen.remove_clip((SELECT id FROM hagen.video_clip WHERE project_id = :'p3' AND room_label = 'B')) AS r;
SELECT * FROM t.clips(:'p3');
SELECT hagen.move_clip((SELECT id FROM hagen.video_clip WHERE project_id = :'p3' AND room_label = 'D'), 0) ->> 'status' AS status;
SELECT * FROM t.clips(:'p3');
SELECT hagen.move_clip((SELECT id FROM hagen.video_clip WHERE project_id = :'p3' AND room_label = 'D'), 2) IS NOT NULL AS moved_to_the_end;
SELECT * FROM t.clips(:'p3');
-- Moving a clip to where it is changes nothing.
SELECT hagen.move_clip((SELECT id FROM hagen.video_clip WHERE project_id = :'p3' AND room_label = 'C'), 1) IS NOT NULL AS moved;
SELECT * FROM t.clips(:'p3');
-- The next run makes only the transition that now leads elsewhere, then compiles.
SELECT hagen.start_video(:'p3') -> 'enqueued_jobs' AS jobs;
SELECT c.room_label, j.kind FROM hagen.job j JOIN hagen.video_clip c ON c.id = j.clip_id
WHERE j.project_id = :'p3' AND j.status = 'queued' ORDER BY 1, 2;
SELECT t.run() > 0 AS ran;
SELECT status, clip_count, completed_clips FROM hagen.video_project WHERE id = :'p3';
-- Sequence orders with gaps and large numbers are put in order too.
SELECT hagen.create_project('ws-m') AS p4 \gset
SELECT hagen.add_clip(:'p4', 'https://img.example.com/x.jpg', room_label => 'x', sequence_order => 2000000000) IS NOT NULL,
	   hagen.add_clip(:'p4', 'https://img.example.com/y.jpg', room_label => 'y', sequence_order => 7) IS NOT NULL,
	   hagen.add_clip(:'p4', 'https://img.example.com/z.jpg', room_label => 'z', sequence_order => 3) IS NOT NULL;
SELECT hagen.move_clip((SELECT id FROM hagen.video_clip WHERE project_id = :'p4' AND room_label = 'x'), 1) -> 'clip_count' AS clips;
SELECT * FROM t.clips(:'p4');
-- Bad moves and removals.
\pset format unaligned
\pset tuples_only on
SELECT t.err(format('SELECT hagen.move_clip(%L, 3)', (SELECT id FROM hagen.video_clip WHERE project_id = :'p4' LIMIT 1)));
SELECT t.err(format('SELECT hagen.move_clip(%L, -1)', (SELECT id FROM hagen.video_clip WHERE project_id = :'p4' LIMIT 1)));
SELECT t.err(format('SELECT hagen.move_clip(%L, NULL)', (SELECT id FROM hagen.video_clip WHERE project_id = :'p4' LIMIT 1)));
SELECT t.err($$SELECT hagen.move_clip('00000000-0000-0000-0000-000000000000', 0)$$);
SELECT t.err($$SELECT hagen.remove_clip('00000000-0000-0000-0000-000000000000')$$);
SELECT t.err($$SELECT hagen.remove_clip(NULL)$$);
\pset format aligned
\pset tuples_only off
-- The last clip can go; the project is then empty.
SELECT hagen.create_project('ws-m') AS p5 \gset
SELECT hagen.add_clip(:'p5', 'https://img.example.com/only.jpg') AS only \gset
SELECT hagen.remove_clip(:'only') -> 'clip_count' AS clips;

-- 4. delete_project: a project never started goes at once, nothing to purge.
SELECT r ->> 'deleted' AS deleted, r ->> 'was' AS was, r -> 'purge_job_id' AS purge
FROM hagen.delete_project(:'p5') AS r;
SELECT count(*) AS left FROM hagen.video_project WHERE id = :'p5';
-- A finished project: its rows go and a purge of its prefix is queued.
SELECT r ->> 'was' AS was, r -> 'provider_cancels' AS cancels, r ->> 'purge_job_id' AS purge_job
FROM hagen.delete_project(:'p3') AS r \gset
SELECT :'was' AS was, :'cancels' AS cancels, t.mask(state ->> 'prefix') AS purges, step
FROM hagen.job WHERE id = :'purge_job';
SELECT (SELECT count(*) FROM hagen.video_clip WHERE project_id = :'p3') AS clips,
	   (SELECT count(*) FROM hagen.job WHERE project_id = :'p3') AS jobs;
DELETE FROM hagen.job WHERE kind = 'purge';	-- the fake provider has no S3
-- A running project: requests at the provider get a cancel that outlives
-- the project; the purge waits for the leases of requests in flight.
DELETE FROM hagen.job WHERE kind IN ('cleanup', 'purge');	-- of the projects ended above
SELECT t.project('ws-m') AS p6 \gset
SELECT hagen.start_video(:'p6') ->> 'status' AS status;
SELECT t.upload_images() > 0 AS images_uploaded;
SELECT count(*) AS ticks FROM t.tick();
SELECT count(*) AS at_the_provider FROM hagen.job WHERE project_id = :'p6' AND step = 'poll';
SELECT t.due();
SELECT job_id AS leased, token AS leased_token FROM hagen.claim_jobs('http', 1) \gset
SELECT r ->> 'was' AS was, r -> 'provider_cancels' AS cancels FROM hagen.delete_project(:'p6') AS r;
SELECT kind, project_id, clip_id, status, state ->> 'request_id' AS request_id
FROM hagen.job WHERE kind = 'cancel' AND state ->> 'deleted_project' = :'p6' ORDER BY id;
SELECT e.effect ->> 'method' AS method, e.effect ->> 'url' AS url
FROM hagen.claim_jobs('http', 10) e JOIN hagen.job j ON j.id = e.job_id
WHERE j.kind = 'cancel' ORDER BY j.id;
SELECT run_at > now() + interval '1 minute' AS purge_waits_for_leases
FROM hagen.job WHERE kind = 'purge' AND state ->> 'project_id' = :'p6';
SELECT hagen.complete_job(:leased, :leased_token, '{"status": 200}') AS late_answer;
\pset format unaligned
\pset tuples_only on
SELECT t.err(format('SELECT hagen.delete_project(%L)', :'p6'));
SELECT t.err($$SELECT hagen.delete_project(NULL)$$);
\pset format aligned
\pset tuples_only off

-- 5. list_projects: newest first, paged by created_at, even for projects
-- made in one transaction.
BEGIN;
SELECT count(hagen.create_project('ws-list', property_id => 'prop-' || i, metadata => jsonb_build_object('n', i)))
FROM generate_series(1, 5) i;
COMMIT;
SELECT property_id, status, clip_count, metadata FROM hagen.list_projects('ws-list');
SELECT property_id FROM hagen.list_projects('ws-list', 2);
SELECT property_id FROM hagen.list_projects('ws-list', 2,
	(SELECT created_at FROM hagen.list_projects('ws-list', 2) ORDER BY created_at LIMIT 1));
SELECT count(*) AS none FROM hagen.list_projects('ws-nobody');
\pset format unaligned
\pset tuples_only on
SELECT t.err($$SELECT * FROM hagen.list_projects('ws-list', 0)$$);
SELECT t.err($$SELECT * FROM hagen.list_projects('ws-list', 1001)$$);
SELECT t.err($$SELECT * FROM hagen.list_projects(NULL)$$);
\pset format aligned
\pset tuples_only off

DELETE FROM hagen.video_project WHERE workspace_id IN ('ws-m', 'ws-list');
DELETE FROM hagen.job WHERE project_id IS NULL;
DELETE FROM hagen.music_track WHERE id = :'m';
