-- hagenkit install script, part 82: making source images reachable by
-- Fal.ai through Fal storage, as the app hagenkit replaces did.
--
-- For each distinct image of a job (start, end):
--   image_fetch:    GET the image (network guard, 10 MB, must be an image)
--   image_initiate: POST {hagen.fal_rest_url}/storage/upload/initiate -> upload_url, file_url
--   image_put:      PUT the bytes to upload_url (pre-signed: no Authorization)
-- then the job's start and end images become the file_urls and it submits.
-- hagen.fal_image_mode = 'url' passes the URLs through instead.

CREATE FUNCTION hagen._fal_image_steps(images text[]) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN (SELECT jsonb_agg(jsonb_build_object('url', u) ORDER BY first)
			FROM (SELECT u, min(o) AS first FROM unnest(images) WITH ORDINALITY AS x(u, o)
				  WHERE u IS NOT NULL GROUP BY u) AS distinct_images);

-- The first step of a generation job on a provider.
CREATE FUNCTION hagen._first_step(provider text) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN provider = 'fal' AND hagen._setting('hagen.fal_image_mode', 'upload') = 'upload'
				THEN 'image_fetch' ELSE 'submit' END;

CREATE FUNCTION hagen._fal_upload_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	img jsonb := j.state -> 'images' -> i;
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		RETURN hagen._http('GET', img ->> 'url', 'none', 'image', jsonb_build_object(
			'guard', true, 'follow_redirects', true,
			'save_to', hagen._work_file(j.project_id, format('images/%s_%s', j.id, i)),
			'max_bytes', 10 * 1024 * 1024));
	WHEN 'image_initiate' THEN
		RETURN hagen._http('POST', rtrim(hagen._setting('hagen.fal_rest_url', 'https://rest.fal.ai'), '/')
				|| '/storage/upload/initiate?storage_type=fal-cdn-v3', 'fal', 'status', jsonb_build_object(
			'headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
			'body', jsonb_build_object('content_type', img ->> 'content_type',
									   'file_name', img ->> 'file_name')));
	WHEN 'image_put' THEN
		RETURN hagen._http('PUT', img ->> 'upload_url', 'none', 'image', jsonb_build_object(
			'guard', true, 'body_file', img ->> 'file',
			'headers', jsonb_build_object('content-type', img ->> 'content_type')));
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai upload step "%"', j.step;
END;
$$;

CREATE FUNCTION hagen._fal_upload_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	images jsonb := j.state -> 'images';
	img jsonb := images -> i;
	b jsonb := o -> 'body';
	ctype text;
	name text;
	start_url text;
	end_url text;
BEGIN
	CASE j.step
	WHEN 'image_fetch' THEN
		IF o ->> 'error_kind' = 'guard' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('refused to fetch image %s: %s', img ->> 'url', o ->> 'error'));
		ELSIF o ->> 'error_kind' = 'too_large' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('image %s is larger than 10 MB, the most Kling accepts', img ->> 'url'));
		ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			ctype := lower(split_part(coalesce(o -> 'headers' ->> 'content-type', ''), ';', 1));
			IF ctype NOT IN ('image/jpeg', 'image/jpg', 'image/png', 'image/webp', 'image/gif', 'image/avif') THEN
				RETURN jsonb_build_object('action', 'fail',
					'error', format('%s is not a JPEG, PNG, WebP, GIF or AVIF image (Content-Type "%s")',
									img ->> 'url', ctype));
			END IF;
			name := coalesce(nullif(regexp_replace(split_part(split_part(img ->> 'url', '?', 1), '#', 1),
												   '^.*/', ''), ''), 'image');
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_initiate',
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('file', o ->> 'file', 'content_type', ctype,
											  'file_name', left(name, 200)))));
		END IF;
		RETURN coalesce(hagen._transient(o, format('fetch of image %s', img ->> 'url')),
			jsonb_build_object('action', 'fail', 'error',
				format('could not fetch image %s: HTTP %s', img ->> 'url', status)));
	WHEN 'image_initiate' THEN
		IF status BETWEEN 200 AND 299 AND jsonb_typeof(b -> 'upload_url') = 'string'
		   AND jsonb_typeof(b -> 'file_url') = 'string' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_put',
				'state', jsonb_build_object('images', jsonb_set(images, ARRAY[i::text],
					img || jsonb_build_object('upload_url', b ->> 'upload_url', 'file_url', b ->> 'file_url'))));
		ELSIF status BETWEEN 200 AND 299 THEN
			RETURN jsonb_build_object('action', 'retry',
				'error', 'Fal.ai storage answered without upload_url and file_url');
		ELSIF status BETWEEN 400 AND 499 AND status <> 429 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai storage refused the upload (HTTP %s): %s', status,
								coalesce(hagen._error_text(o), 'no detail')));
		END IF;
		RETURN hagen._transient(o, 'Fal.ai storage initiate');
	WHEN 'image_put' THEN
		IF status BETWEEN 200 AND 299 THEN
			IF i + 1 < jsonb_array_length(images) THEN
				RETURN jsonb_build_object('action', 'advance', 'step', 'image_fetch',
					'state', jsonb_build_object('image_index', i + 1));
			END IF;
			SELECT x ->> 'file_url' INTO start_url FROM jsonb_array_elements(images) x
			WHERE x ->> 'url' = j.state ->> 'start_image';
			SELECT x ->> 'file_url' INTO end_url FROM jsonb_array_elements(images) x
			WHERE x ->> 'url' = j.state ->> 'end_image';
			RETURN jsonb_build_object('action', 'advance', 'step', 'submit',
				'log', format('%s image(s) uploaded to Fal storage', jsonb_array_length(images)),
				'state', jsonb_build_object('source_start_image', j.state ->> 'start_image',
											'source_end_image', j.state ->> 'end_image',
											'start_image', start_url, 'end_image', end_url));
		ELSIF status = 403 THEN
			-- The signed upload URL expired or was used: ask for a new one.
			RETURN jsonb_build_object('action', 'advance', 'step', 'image_initiate', 'keep_attempts', true,
				'log', 'Fal storage upload URL refused (HTTP 403); asking for a new one');
		END IF;
		RETURN coalesce(hagen._transient(o, 'upload to Fal storage'),
			jsonb_build_object('action', 'fail', 'error',
				format('upload to Fal storage failed: HTTP %s%s', status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai upload step "%"', j.step;
END;
$$;
