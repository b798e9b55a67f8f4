-- hagenkit install script, part 81: the xAI adapter (grok-imagine-video).
--
-- submit: POST {hagen.xai_url}/videos/generations -> {"request_id"}; the
--         body named as the model's row in hagen.video_model says
-- poll:   GET {hagen.xai_url}/videos/{request_id}: 202 pending (maybe with an
--         empty body), 200 with status done / failed / expired; the older
--         shape has no status and is done when video.url is present.
-- xAI has no cancel endpoint: a canceled request is left to finish.

CREATE FUNCTION hagen._xai_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base text := rtrim(hagen._setting('hagen.xai_url', 'https://api.x.ai/v1'), '/');
BEGIN
	CASE j.step
	WHEN 'submit' THEN
		RETURN hagen._http('POST', base || '/videos/generations', 'xai', 'request', jsonb_build_object(
			'headers', '{"content-type": "application/json", "accept": "application/json"}'::jsonb,
			'body', jsonb_build_object('model', j.state ->> 'model') || hagen._model_input(j.state, 'xai')));
	WHEN 'poll', 'result' THEN
		RETURN hagen._http('GET', base || '/videos/' || hagen._uri_encode(j.request_id, false), 'xai',
			'status', '{"headers": {"accept": "application/json"}}');
	END CASE;
	RAISE EXCEPTION 'unknown xAI step "%"', j.step;
END;
$$;

CREATE FUNCTION hagen._xai_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	b jsonb := o -> 'body';
	st text;
	msg text := hagen._error_text(o);
BEGIN
	IF j.step = 'submit' THEN
		IF status = 200 AND jsonb_typeof(b -> 'request_id') = 'string' AND b ->> 'request_id' <> '' THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'poll',
				'delay_ms', hagen._poll_interval_ms(),
				'request_id', b ->> 'request_id',
				'log', format('submitted to xAI as request %s', b ->> 'request_id'),
				'state', jsonb_build_object('request_id', b ->> 'request_id',
											'submitted_ms', hagen._now_ms()));
		ELSIF status IN (429, 503) OR (status = 0 AND o ->> 'phase' = 'connect') THEN
			RETURN hagen._transient(o, 'submit to xAI');
		ELSIF status BETWEEN 400 AND 499 THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', format('xAI refused the request (HTTP %s): %s', status, coalesce(msg, 'no detail')));
		END IF;
		RETURN jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to xAI unconfirmed: %s. The request may have reached xAI and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
								 ELSE format('HTTP %s%s', status, coalesce(': ' || msg, '')) END));
	END IF;

	-- poll (and result, which is the same request).  xAI has no queue
	-- state: a request generates from its submit on.
	IF status = 202 THEN
		RETURN hagen._poll_again(j, 'pending', NULL, b -> 'progress', true,
								 (j.state ->> 'submitted_ms')::bigint);
	ELSIF status = 404 THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('xAI does not know request %s (HTTP 404)', j.request_id));
	ELSIF status <> 200 THEN
		RETURN coalesce(hagen._transient(o, 'xAI status'),
			jsonb_build_object('action', 'fail',
				'error', format('xAI status of request %s failed (HTTP %s): %s', j.request_id, status,
								coalesce(msg, 'no detail'))));
	ELSIF jsonb_typeof(b) <> 'object' THEN
		RETURN jsonb_build_object('action', 'retry',
			'error', 'xAI answered with a body that is not a JSON object');
	END IF;
	st := coalesce(b ->> 'status', CASE WHEN b -> 'video' ->> 'url' <> '' THEN 'done' END, 'pending');
	IF st = 'done' THEN
		IF (b -> 'video' ->> 'respect_moderation')::boolean IS FALSE THEN
			RETURN jsonb_build_object('action', 'fail',
				'error', 'xAI blocked the video by content moderation');
		ELSIF coalesce(b -> 'video' ->> 'url', '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error', 'xAI result has no video.url');
		END IF;
		-- What xAI charged, when it says (1 USD = 10^10 ticks, 1 cent = 10^8).
		RETURN jsonb_build_object('action', 'advance', 'step', 'download',
			'state', jsonb_strip_nulls(jsonb_build_object('video_url', b -> 'video' ->> 'url',
				'provider_duration', b -> 'video' -> 'duration',
				'actual_cost_cents', CASE WHEN b -> 'usage' ->> 'cost_in_usd_ticks' ~ '^[0-9]+$'
										  THEN ceil((b -> 'usage' ->> 'cost_in_usd_ticks')::numeric / 1e8)::integer END))
				|| hagen._poll_done(j));
	ELSIF st = 'failed' THEN
		RETURN jsonb_build_object('action', 'fail',
			'error', format('xAI could not generate the video (%s): %s',
							coalesce(b -> 'error' ->> 'code', 'failed'),
							coalesce(b -> 'error' ->> 'message', 'no detail')));
	ELSIF st = 'expired' THEN
		RETURN jsonb_build_object('action', 'fail', 'error', format('xAI request %s expired', j.request_id));
	END IF;
	RETURN hagen._poll_again(j, st, NULL, b -> 'progress', true, (j.state ->> 'submitted_ms')::bigint);
END;
$$;

-- xAI offers no way to cancel a request: the cancel job only records that.
CREATE FUNCTION hagen._xai_cancel_effect(j hagen.job) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN hagen._noop('xAI has no cancel endpoint');
