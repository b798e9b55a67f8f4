-- hagenkit install script, part 80: the Fal.ai adapter (Kling image-to-video
-- through the Fal queue API).
--
-- submit: POST {hagen.fal_queue_url}/{model} -> request_id and its URLs
-- poll:   GET status_url (202 while IN_QUEUE / IN_PROGRESS, 200 COMPLETED)
-- result: GET response_url -> {"video": {"url": ...}} or the model's error
-- Fal has no idempotency key: a submit is retried only when it certainly did
-- not arrive (429, 503, or no connection), so nothing is ever paid twice.

-- The base URL of a request of a model: status, result and cancel drop the
-- model's sub-path (owner/app only; workflows/ and comfy/ keep 3 segments).
CREATE FUNCTION hagen._fal_request_url(model text, request_id text) RETURNS text
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	parts text[] := string_to_array(model, '/');
	app text;
BEGIN
	IF parts[1] IN ('workflows', 'comfy') THEN
		app := array_to_string(parts[1:3], '/');
	ELSE
		app := array_to_string(parts[1:2], '/');
	END IF;
	RETURN rtrim(hagen._setting('hagen.fal_queue_url', 'https://queue.fal.run'), '/')
		|| '/' || app || '/requests/' || hagen._uri_encode(request_id, false);
END;
$$;

CREATE FUNCTION hagen._fal_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := hagen._fal_request_url(j.state ->> 'model', coalesce(j.request_id, ''));
	url text;
BEGIN
	IF j.step LIKE 'image\_%' THEN
		RETURN hagen._fal_upload_effect(j);
	END IF;
	CASE j.step
	WHEN 'submit' THEN
		RETURN hagen._http('POST', rtrim(hagen._setting('hagen.fal_queue_url', 'https://queue.fal.run'), '/')
				|| '/' || (j.state ->> 'model'), 'fal', 'request',
			jsonb_build_object('headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
							   'body', hagen._model_input(j.state, 'fal')));
	WHEN 'poll' THEN
		url := coalesce(j.state ->> 'status_url', base || '/status');
		RETURN hagen._http('GET', url || CASE WHEN url ~ '\?' THEN '&' ELSE '?' END || 'logs=0',
			'fal', 'status', '{"headers": {"accept": "application/json"}}');
	WHEN 'result' THEN
		RETURN hagen._http('GET', coalesce(j.state ->> 'response_url', base), 'fal', 'request',
			'{"headers": {"accept": "application/json"}}');
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai step "%"', j.step;
END;
$$;

-- Reads Fal.ai's answers.
CREATE FUNCTION hagen._fal_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	b jsonb := o -> 'body';
	req text;
	msg text := hagen._error_text(o);
BEGIN
	IF j.step LIKE 'image\_%' THEN
		RETURN hagen._fal_upload_interpret(j, o);
	END IF;
	CASE j.step
	WHEN 'submit' THEN
		req := coalesce(CASE WHEN jsonb_typeof(b -> 'request_id') = 'string' THEN b ->> 'request_id' END,
						o -> 'headers' ->> 'x-fal-request-id');
		IF status BETWEEN 200 AND 299 AND req IS NOT NULL THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll', 'request_id', req,
				'delay_ms', hagen._poll_interval_ms(),
				'log', format('submitted to Fal.ai as request %s', req),
				'state', jsonb_strip_nulls(jsonb_build_object('request_id', req,
					'submitted_ms', hagen._now_ms(),
					'status_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'status_url' END,
					'response_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'response_url' END,
					'cancel_url', CASE WHEN jsonb_typeof(b) = 'object' THEN b ->> 'cancel_url' END)));
		END IF;
		-- Certainly not received: safe to send again.
		IF status IN (429, 503) OR (status = 0 AND o ->> 'phase' = 'connect') THEN
			RETURN hagen._transient(o, 'submit to Fal.ai');
		END IF;
		IF status IN (400, 401, 403, 404, 422) OR (status BETWEEN 400 AND 499) THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai refused the request (HTTP %s): %s', status, coalesce(msg, 'no detail')));
		END IF;
		-- The request may have arrived (and be billed): never send it twice
		-- on our own.
		IF coalesce(hagen._setting('hagen.resubmit_unconfirmed', 'off')::boolean, false) THEN
			RETURN jsonb_build_object('action', 'retry', 'unconfirmed', true,
				'error', format('submit to Fal.ai unconfirmed (%s); sending it again as configured',
								coalesce(msg, 'no answer')));
		END IF;
		RETURN jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to Fal.ai unconfirmed: %s. The request may have reached Fal.ai and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
								 ELSE format('HTTP %s%s', status, coalesce(': ' || msg, '')) END));
	WHEN 'poll' THEN
		IF status = 202 OR (status = 200 AND jsonb_typeof(b) = 'object'
							AND b ->> 'status' IN ('IN_QUEUE', 'IN_PROGRESS')) THEN
			-- Still queued or generating: no log line, the job keeps count.
			RETURN hagen._poll_again(j, b ->> 'status', b -> 'queue_position', NULL,
									 coalesce(b ->> 'status' = 'IN_PROGRESS', false));
		ELSIF status = 200 THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'result',
				'state', jsonb_strip_nulls(jsonb_build_object('provider_status', 'COMPLETED',
					'provider_error', b ->> 'error', 'provider_error_type', b ->> 'error_type'))
					|| CASE WHEN b ->> 'error' IS NULL THEN hagen._poll_done(j) ELSE '{}' END);
		ELSIF status = 404 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai does not know request %s (HTTP 404)', j.request_id));
		END IF;
		RETURN coalesce(hagen._transient(o, 'Fal.ai status'),
			jsonb_build_object('action', 'fail',
				'error', format('Fal.ai status of request %s failed (HTTP %s): %s',
								j.request_id, status, coalesce(msg, 'no detail'))));
	WHEN 'result' THEN
		IF status BETWEEN 200 AND 299 THEN
			IF jsonb_typeof(b) = 'object' AND jsonb_typeof(b -> 'video') = 'object'
			   AND jsonb_typeof(b -> 'video' -> 'url') = 'string' THEN
				RETURN jsonb_build_object('action', 'advance', 'step', 'download',
					'state', jsonb_build_object('video_url', b -> 'video' ->> 'url'));
			ELSIF b IS NULL THEN
				RETURN jsonb_build_object('action', 'retry',
					'error', 'Fal.ai result is not valid JSON: ' || coalesce(left(o ->> 'body_text', 100), ''));
			END IF;
			RETURN jsonb_build_object('action', 'fail',
				'error', 'Fal.ai result has no video.url: ' || left(b::text, 300));
		ELSIF status = 400 AND msg ~* 'in progress' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll',
									  'delay_ms', hagen._poll_delay_ms(j.state, hagen._now_ms()));
		ELSIF status BETWEEN 400 AND 499 AND status <> 429 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai could not generate the video (HTTP %s): %s', status,
								coalesce(msg, j.state ->> 'provider_error', 'no detail')));
		ELSIF j.state ? 'provider_error' AND status >= 500 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('Fal.ai could not generate the video: %s (%s)',
								coalesce(msg, j.state ->> 'provider_error'),
								coalesce(j.state ->> 'provider_error_type', 'HTTP ' || status)));
		END IF;
		RETURN hagen._transient(o, 'Fal.ai result');
	END CASE;
	RAISE EXCEPTION 'unknown Fal.ai step "%"', j.step;
END;
$$;
