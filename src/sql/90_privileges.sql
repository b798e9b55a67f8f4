-- hagenkit install script, part 90: privileges.
--
-- Nothing of hagen's is granted to PUBLIC except the public API functions;
-- the worker protocol and internal helpers are for superusers (the workers).

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA hagen FROM PUBLIC;
GRANT USAGE ON SCHEMA hagen TO PUBLIC;
GRANT EXECUTE ON FUNCTION
	hagen.create_project(text, text, text, boolean, uuid, real, real, jsonb),
	hagen.add_clip(uuid, text, text, text, text, text, real, text, integer, text),
	hagen.add_music_track(text, text, text, text, real),
	hagen.start_video(uuid),
	hagen.cancel_video(uuid),
	hagen.retry_video(uuid),
	hagen.video_status(uuid),
	hagen.get_video_path(text, uuid, text),
	hagen.public_url(text),
	hagen.presign_url(text, text, interval, timestamptz),
	hagen.provider_configured(text)
TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA hagen FROM PUBLIC;
