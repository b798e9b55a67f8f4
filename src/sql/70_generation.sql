-- hagenkit install script, part 70: clip and transition jobs.
--
-- Steps: submit -> poll -> result (the provider's adapter) -> download ->
-- store (generic).  The job's state holds its inputs, fixed when it was
-- queued, and what each step learnt (request id and URLs, the video URL,
-- the local file).

CREATE FUNCTION hagen._max_download_bytes() RETURNS bigint
	LANGUAGE sql STABLE
	RETURN pg_size_bytes(hagen._setting('hagen.max_download_bytes', '1GB'));

-- The effect of the current step of a clip or transition job.
CREATE FUNCTION hagen._generation_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.step
	WHEN 'image_fetch', 'image_frame', 'image_store', 'image_source', 'image_pull' THEN
		RETURN hagen._image_step_effect(j);
	WHEN 'image_initiate', 'image_put', 'submit', 'poll', 'result' THEN
		CASE j.provider
		WHEN 'fal' THEN RETURN hagen._fal_effect(j);
		WHEN 'xai' THEN RETURN hagen._xai_effect(j);
		END CASE;
		RAISE EXCEPTION 'unknown provider "%"', j.provider;
	WHEN 'download' THEN
		RETURN hagen._http('GET', j.state ->> 'video_url', 'none', 'media',
			jsonb_build_object('guard', true, 'follow_redirects', true, 'save_to', j.state ->> 'file',
							   'max_bytes', hagen._max_download_bytes()));
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		RETURN hagen._upload_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a % job', j.step, j.kind;
END;
$$;

-- Reads the outcome of the current step of a clip or transition job.
CREATE FUNCTION hagen._generation_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	-- An HTTP status (an image effect's outcome says "ok" or "error" instead).
	status integer := CASE WHEN o ->> 'status' ~ '^[0-9]{1,4}$' THEN (o ->> 'status')::integer ELSE 0 END;
	d jsonb;
BEGIN
	CASE j.step
	WHEN 'image_fetch', 'image_frame', 'image_store', 'image_source', 'image_pull' THEN
		RETURN hagen._image_step_interpret(j, o);
	WHEN 'image_initiate', 'image_put', 'submit', 'poll', 'result' THEN
		CASE j.provider
		WHEN 'fal' THEN RETURN hagen._fal_interpret(j, o);
		WHEN 'xai' THEN RETURN hagen._xai_interpret(j, o);
		END CASE;
	WHEN 'download' THEN
		IF o ->> 'error_kind' = 'guard' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('refused to download %s: %s', j.state ->> 'video_url', o ->> 'error'));
		ELSIF o ->> 'error_kind' = 'too_large' THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('the video at %s is larger than hagen.max_download_bytes (%s bytes)',
								j.state ->> 'video_url', hagen._max_download_bytes()));
		ELSIF status BETWEEN 200 AND 299 AND o ? 'file' THEN
			RETURN jsonb_build_object('action', 'advance',
				'step', hagen._store_step((o ->> 'bytes')::bigint),
				'state', jsonb_build_object('bytes', o -> 'bytes'));
		END IF;
		RETURN coalesce(hagen._transient(o, 'download of the generated video'),
			jsonb_build_object('action', 'fail', 'error',
				format('download of %s failed: HTTP %s%s', j.state ->> 'video_url', status,
					   coalesce(': ' || hagen._error_text(o), ''))));
	WHEN 'store', 'upload_create', 'upload_parts', 'upload_complete', 'upload_check' THEN
		d := hagen._upload_interpret(j, o);
		IF d ->> 'action' = 'stored' THEN
			RETURN d || jsonb_build_object('action', 'succeed',
				'cost_cents', coalesce((j.state ->> 'actual_cost_cents')::integer,
									   (j.state ->> 'cost_cents')::integer, 0),
				'state', coalesce(d -> 'state', '{}') || jsonb_build_object('url', hagen._stored_url(j.state ->> 'key')));
		END IF;
		RETURN d;
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a % job', j.step, j.kind;
END;
$$;

-- A cancel job sends the provider's cancel request for a request already made.
CREATE FUNCTION hagen._provider_cancel_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.provider
	WHEN 'fal' THEN
		RETURN hagen._http('PUT', coalesce(j.state ->> 'cancel_url',
				hagen._fal_request_url(j.state ->> 'model', j.state ->> 'request_id') || '/cancel'),
			'fal', 'status', '{"headers": {"accept": "application/json"}}');
	WHEN 'xai' THEN
		RETURN hagen._xai_cancel_effect(j);
	WHEN 's3' THEN
		RETURN hagen._upload_abort_effect(j.state ->> 'key', j.state ->> 'upload_id');
	END CASE;
	RAISE EXCEPTION 'unknown provider "%"', j.provider;
END;
$$;

CREATE FUNCTION hagen._provider_cancel_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	IF o ->> 'type' = 'noop' THEN
		RETURN jsonb_build_object('action', 'succeed', 'log', 'provider has no cancel endpoint');
	ELSIF j.provider = 's3' AND coalesce((o ->> 'status')::integer, 0) BETWEEN 200 AND 499 THEN
		RETURN jsonb_build_object('action', 'succeed', 'log',
			format('abort of the multipart upload of %s answered HTTP %s%s', j.state ->> 'key',
				   o ->> 'status', coalesce(': ' || hagen._s3_error(o), '')));
	ELSIF coalesce((o ->> 'status')::integer, 0) BETWEEN 200 AND 499 THEN
		RETURN jsonb_build_object('action', 'succeed', 'log',
			format('provider answered the cancel of request %s with HTTP %s',
				   j.state ->> 'request_id', o ->> 'status'));
	END IF;
	RETURN hagen._transient(o, 'cancel request') || '{"max_attempts": 3}';
END;
$$;
