-- hagenkit install script, part 83: the photos of a clip or transition,
-- fitted to the project's shape and made reachable by the provider.
--
-- Kling and xAI make a clip in the shape of the photo they are given, not
-- the shape asked: a 9:16 project of landscape photos would get landscape
-- clips with bars inside a vertical video.  So, for each distinct image of
-- a job (start, end):
--   image_fetch  GET the photo (network guard, size limit, must be an image)
--   image_frame  hagen-compile image, on the compile lane: EXIF orientation
--                applied, the centre cut to the aspect ratio (framing crop)
--                or the whole photo on a black canvas of it (pad), at most the
--                model's image size, a JPEG
-- then, to reach the provider:
--   Fal (hagen.fal_image_mode upload): image_initiate, image_put (part 82)
--   otherwise image_store: PUT into the bucket under the project's prefix
--                (deleted with the project); the provider gets a presigned URL
-- and with the last image the job submits.  A project whose framing is
-- none sends its photos as they are (Fal: uploaded; xAI: the URL itself).
-- With no compile worker in the server (hagen.compile_workers = 0), the
-- fitting runs on a worker of another host, which reads and writes files
-- only through the bucket: the photo is stored there first (image_source),
-- the fitted photo comes back there, and Fal's upload fetches it again
-- (image_pull).

-- The first step of a generation job of a project.
CREATE FUNCTION hagen._first_step(provider text, framing text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN framing <> 'none'
				  OR (provider = 'fal' AND hagen._setting('hagen.fal_image_mode', 'upload') = 'upload')
				THEN 'image_fetch' ELSE 'submit' END;

-- How a job's fetched (and fitted) photos reach its provider: 'fal'
-- (Fal storage) or 's3' (the bucket, by a presigned URL).
CREATE FUNCTION hagen._image_route(provider text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN provider = 'fal' AND hagen._setting('hagen.fal_image_mode', 'upload') = 'upload'
				THEN 'fal' ELSE 's3' END;

-- The storage key of a fitted photo: beside the job's video, in the
-- project's prefix.
CREATE FUNCTION hagen._image_key(j hagen.job, i integer) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN regexp_replace(j.state ->> 'key', '[^/]*$', '') || format('image_%s_%s.jpg', j.id, i);

-- The storage key of a photo as it was fetched, when a worker on another
-- host fits it.
CREATE FUNCTION hagen._image_source_key(j hagen.job, i integer) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN regexp_replace(j.state ->> 'key', '[^/]*$', '') || format('image_%s_%s_source', j.id, i);

-- The work file of a fitted photo.
CREATE FUNCTION hagen._image_framed_file(j hagen.job, i integer) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN hagen._work_file(j.project_id, format('images/%s_%s.jpg', j.id, i));

-- The effect of an image step.
CREATE FUNCTION hagen._image_step_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	img jsonb := j.state -> 'images' -> i;
	framed boolean := coalesce(j.state ->> 'framing', 'none') <> 'none';
	eff jsonb;
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		-- A photo that is fitted may be larger than the model takes: it is
		-- written again, smaller.
		RETURN hagen._http('GET', img ->> 'url', 'none', 'image', jsonb_build_object(
			'guard', true, 'follow_redirects', true,
			'save_to', hagen._work_file(j.project_id, format('images/%s_%s', j.id, i)),
			'max_bytes', CASE WHEN framed THEN 50 * 1024 * 1024
							  ELSE coalesce((j.state ->> 'max_image_bytes')::integer, 10 * 1024 * 1024) END));
	WHEN 'image_frame' THEN
		eff := hagen._image_effect(img ->> 'file', hagen._image_framed_file(j, i),
			j.state ->> 'aspect_ratio', j.state ->> 'framing',
			coalesce((j.state ->> 'max_image_side')::integer, 1920),
			coalesce((j.state ->> 'max_image_bytes')::integer, 10 * 1024 * 1024));
		IF NOT hagen._compiles_elsewhere() THEN
			RETURN eff;
		END IF;
		-- For a worker on any host: the compile-lane shape, every file with
		-- its storage key (hagen-compile compile runs a manifest "image").
		RETURN jsonb_build_object('type', 'compile', 'dir', hagen._work_file(j.project_id, 'images'),
			'timeout_ms', eff -> 'timeout_ms',
			'manifest', jsonb_build_object('image', eff - 'type' - 'timeout_ms'),
			'inputs', jsonb_build_array(jsonb_build_object('file', img ->> 'file',
														   'key', hagen._image_source_key(j, i))),
			'outputs', jsonb_build_array(jsonb_build_object('file', hagen._image_framed_file(j, i),
				'key', hagen._image_key(j, i), 'content_type', 'image/jpeg')));
	WHEN 'image_source' THEN
		RETURN hagen._http('PUT', hagen._s3_url(hagen._image_source_key(j, i)), 's3', 'image',
			jsonb_build_object('body_file', img ->> 'file',
							   'headers', jsonb_build_object('content-type', img ->> 'content_type')));
	WHEN 'image_pull' THEN
		RETURN hagen._http('GET', hagen._s3_url(hagen._image_key(j, i)), 's3', 'image',
			jsonb_build_object('save_to', hagen._image_framed_file(j, i)));
	WHEN 'image_store' THEN
		RETURN hagen._http('PUT', hagen._s3_url(hagen._image_key(j, i)), 's3', 'image', jsonb_build_object(
			'body_file', img ->> 'file', 'headers', jsonb_build_object('content-type', img ->> 'content_type')));
	END CASE;
	RAISE EXCEPTION 'unknown image step "%"', j.step;
END;
$$;

-- After the image at image_index has reached the provider as url: the next
-- image, or the submit with the start and end images as the provider sees
-- them.
CREATE FUNCTION hagen._image_done(j hagen.job, url text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	images jsonb := jsonb_set(j.state -> 'images', ARRAY[i::text],
							  (j.state -> 'images' -> i) || jsonb_build_object('file_url', url));
	start_url text;
	end_url text;
BEGIN
	IF i + 1 < jsonb_array_length(images) THEN
		RETURN jsonb_build_object('action', 'advance', 'step', 'image_fetch',
			'state', jsonb_build_object('images', images, 'image_index', i + 1));
	END IF;
	SELECT x ->> 'file_url' INTO start_url FROM jsonb_array_elements(images) x
	WHERE x ->> 'url' = j.state ->> 'start_image';
	SELECT x ->> 'file_url' INTO end_url FROM jsonb_array_elements(images) x
	WHERE x ->> 'url' = j.state ->> 'end_image';
	RETURN jsonb_build_object('action', 'advance', 'step', 'submit',
		'log', format('%s image(s) %s', jsonb_array_length(images),
					  CASE WHEN j.state ->> 'image_route' = 's3' THEN 'stored for the provider'
						   ELSE 'uploaded to Fal storage' END),
		'state', jsonb_build_object('images', images,
									'source_start_image', j.state ->> 'start_image',
									'source_end_image', j.state ->> 'end_image',
									'start_image', start_url, 'end_image', end_url));
END;
$$;

-- Reads the outcome of an image step.
CREATE FUNCTION hagen._image_step_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	-- An HTTP status; an image effect's outcome says "ok" or "error".
	status integer := CASE WHEN o ->> 'status' ~ '^[0-9]{1,4}$' THEN (o ->> 'status')::integer ELSE 0 END;
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	images jsonb := j.state -> 'images';
	img jsonb := images -> i;
	framed boolean := coalesce(j.state ->> 'framing', 'none') <> 'none';
	via_fal boolean := coalesce(j.state ->> 'image_route', hagen._image_route(j.provider)) = 'fal';
	ctype text;
	name text;
	r jsonb := o -> 'result';
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		IF o ->> 'error_kind' = 'guard' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('refused to fetch image %s: %s', img ->> 'url', o ->> 'error'));
		ELSIF o ->> 'error_kind' = 'too_large' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', CASE WHEN framed THEN format('image %s is larger than 50 MB', img ->> 'url')
							  ELSE format('image %s is larger than %s, the most the model takes', img ->> 'url',
										  pg_size_pretty(coalesce((j.state ->> 'max_image_bytes')::bigint, 10485760))) END);
		ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			ctype := lower(split_part(coalesce(o -> 'headers' ->> 'content-type', ''), ';', 1));
			IF ctype NOT IN ('image/jpeg', 'image/jpg', 'image/png', 'image/webp', 'image/gif', 'image/avif') THEN
				RETURN jsonb_build_object('action', 'fail',
					'error', format('%s is not a JPEG, PNG, WebP, GIF or AVIF image (Content-Type "%s")',
									img ->> 'url', ctype));
			END IF;
			name := coalesce(nullif(regexp_replace(split_part(split_part(img ->> 'url', '?', 1), '#', 1),
												   '^.*/', ''), ''), 'image');
			RETURN jsonb_build_object('action', 'advance',
				'step', CASE WHEN framed AND hagen._compiles_elsewhere() THEN 'image_source'
							 WHEN framed THEN 'image_frame' WHEN via_fal THEN 'image_initiate' ELSE 'image_store' END,
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('file', o ->> 'file', 'content_type', ctype,
											  'file_name', left(name, 200)))));
		END IF;
		RETURN coalesce(hagen._transient(o, format('fetch of image %s', img ->> 'url')),
			jsonb_build_object('action', 'fail', 'error',
				format('could not fetch image %s: HTTP %s', img ->> 'url', status)));
	WHEN 'image_source' THEN
		IF status BETWEEN 200 AND 299 THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_frame');
		END IF;
		RETURN hagen._s3_failure(o, format('store of image %s for a compile worker', img ->> 'url'));
	WHEN 'image_pull' THEN
		IF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_initiate');
		END IF;
		RETURN hagen._s3_failure(o, format('fetch of the fitted image %s', hagen._image_key(j, i)));
	WHEN 'image_frame' THEN
		IF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object' AND (o ->> 'uploaded')::boolean IS TRUE
		   AND NOT via_fal THEN
			-- Fitted on another host and stored in the bucket: the provider
			-- gets it from there.
			RETURN hagen._image_done(j, hagen.presign_url(hagen._image_key(j, i), 'GET',
				least(hagen._setting_interval('hagen.clip_timeout', '20 minutes') + interval '1 hour',
					  interval '7 days')));
		ELSIF o ->> 'status' = 'ok' AND jsonb_typeof(r) = 'object' THEN
			RETURN jsonb_build_object('action', 'advance',
				'step', CASE WHEN (o ->> 'uploaded')::boolean IS TRUE THEN 'image_pull'
							 WHEN via_fal THEN 'image_initiate' ELSE 'image_store' END,
				'log', format('image %s fitted to %s (%s): %sx%s from %sx%s%s, %s bytes', img ->> 'url',
							  j.state ->> 'aspect_ratio', j.state ->> 'framing', r ->> 'width', r ->> 'height',
							  r -> 'source' ->> 'width', r -> 'source' ->> 'height',
							  CASE WHEN (r -> 'source' ->> 'orientation') NOT IN ('1', '')
								   THEN ' turned upright (EXIF orientation ' || (r -> 'source' ->> 'orientation') || ')'
								   ELSE '' END,
							  r ->> 'bytes'),
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('file', hagen._work_file(j.project_id, format('images/%s_%s.jpg', j.id, i)),
											  'content_type', 'image/jpeg',
						'file_name', left(regexp_replace(img ->> 'file_name', '\.[A-Za-z0-9]{1,5}$', ''), 195) || '.jpg',
						'width', r -> 'width', 'height', r -> 'height'))));
		ELSIF o ->> 'kind' = 'input' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('could not fit image %s to %s: %s', img ->> 'url', j.state ->> 'aspect_ratio',
								coalesce(o ->> 'error', 'no detail')));
		END IF;
		RETURN jsonb_build_object('action', 'retry', 'max_attempts', 3,
			'error', format('fitting image %s failed: %s', img ->> 'url', coalesce(o ->> 'error', 'no result')));
	WHEN 'image_store' THEN
		IF status BETWEEN 200 AND 299 THEN
			RETURN hagen._image_done(j, hagen.presign_url(hagen._image_key(j, i), 'GET',
				least(hagen._setting_interval('hagen.clip_timeout', '20 minutes') + interval '1 hour',
					  interval '7 days')));
		END IF;
		RETURN coalesce(hagen._transient(o, 'store of a fitted image'),
			jsonb_build_object('action', 'fail', 'error',
				format('could not store the fitted image %s: HTTP %s%s', hagen._image_key(j, i), status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	END CASE;
	RAISE EXCEPTION 'unknown image step "%"', j.step;
END;
$$;
