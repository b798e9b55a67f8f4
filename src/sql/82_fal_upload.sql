-- hagenkit install script, part 82: making source images reachable by
-- Fal.ai through Fal storage, as the app hagenkit replaces did.
--
-- For each distinct image of a job (start, end), once fetched (and fitted
-- to the project's shape; see part 83):
--   image_initiate: POST {hagen.fal_rest_url}/storage/upload/initiate -> upload_url, file_url
--   image_put:      PUT the bytes to upload_url (pre-signed: no Authorization)
-- then the job's start and end images become the file_urls and it submits.
-- hagen.fal_image_mode = 'url' stores fitted images in the bucket instead
-- (as for xAI), and passes the URLs through when the project's framing is
-- none.

-- (PL/pgSQL: a SQL function with a query for body is parsed and planned at
-- every call.)
CREATE FUNCTION hagen._fal_image_steps(images text[]) RETURNS jsonb
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	RETURN (SELECT jsonb_agg(jsonb_build_object('url', u) ORDER BY first)
			FROM (SELECT u, min(o) AS first FROM unnest(images) WITH ORDINALITY AS x(u, o)
				  WHERE u IS NOT NULL GROUP BY u) AS distinct_images);
END;
$$;

CREATE FUNCTION hagen._fal_upload_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	i integer := coalesce((j.state ->> 'image_index')::integer, 0);
	img jsonb := j.state -> 'images' -> i;
BEGIN
	CASE j.step
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
BEGIN
	CASE j.step
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
			RETURN hagen._image_done(j, img ->> 'file_url');
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
