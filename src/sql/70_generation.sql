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

-- ---- Polling: when to ask the provider again ----
--
-- A request is polled at hagen.poll_interval only near the expected end of
-- its generation.  While it waits in the provider's queue, the interval
-- grows by half at each poll, and with the number of requests ahead.  Once
-- it generates, the expected end comes from the provider's own progress
-- where it reports one (xAI: the job polls again halfway to the end that
-- progress predicts), else from the model's typical time (the median of its
-- last 20 generations recorded in hagen.job, as the engine saw them): the
-- job sleeps until just before that end, then polls at the interval,
-- backing off as it runs late.
-- A model with fewer than 3 generations recorded has no typical time: the
-- interval then grows by half at each poll.  No wait exceeds 8 intervals,
-- except the sleep until an expected end.  The state keeps what this needs:
-- submitted_ms, polled_ms (the last poll), polls and queue_polls,
-- generating_since_ms, typical_ms, and at the end generation_ms.

-- hagen.poll_interval in milliseconds.
CREATE FUNCTION hagen._poll_interval_ms() RETURNS bigint
	LANGUAGE sql STABLE
	RETURN greatest(1, extract(epoch FROM hagen._setting_interval('hagen.poll_interval', '2 seconds'))
					   * 1000)::bigint;

-- The time now in milliseconds since the epoch (as the state keeps times).
CREATE FUNCTION hagen._now_ms() RETURNS bigint
	LANGUAGE sql VOLATILE
	RETURN (extract(epoch FROM clock_timestamp()) * 1000)::bigint;

-- The typical time a model takes to generate, in milliseconds: the median
-- of its last 20 generations recorded in hagen.job, or NULL when fewer than
-- 3 are.  (Read once per job, when it starts generating.)
CREATE FUNCTION hagen._typical_generation_ms(provider text, model text) RETURNS bigint
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	t double precision;
BEGIN
	SELECT CASE WHEN count(*) >= 3 THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY g) END INTO t
	FROM (SELECT (q.state ->> 'generation_ms')::double precision AS g FROM hagen.job q
		  WHERE q.provider = _typical_generation_ms.provider
			AND q.state ->> 'model' = _typical_generation_ms.model AND q.state ? 'generation_ms'
		  ORDER BY q.id DESC LIMIT 20) AS recent;
	RETURN round(t)::bigint;
END;
$$;

-- How long to wait before the next poll of a request, from the job's state
-- after the last poll (see above).
CREATE FUNCTION hagen._poll_delay_ms(st jsonb, now_ms bigint) RETURNS bigint
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	base numeric := hagen._poll_interval_ms();
	cap numeric := 8 * hagen._poll_interval_ms();
	since numeric := (st ->> 'generating_since_ms')::numeric;
	typical numeric := nullif((st ->> 'typical_ms')::numeric, 0);
	elapsed numeric;
	progress numeric;
	remaining numeric;
	margin numeric;
BEGIN
	IF since IS NULL THEN
		-- In the provider's queue (or not known to generate yet).
		RETURN least(cap, base * power(1.5, greatest(coalesce((st ->> 'queue_polls')::integer, 1) - 1, 0))
						  * (1 + least(coalesce((st ->> 'queue_position')::numeric, 0), 3)))::bigint;
	END IF;
	elapsed := greatest(now_ms - since, 0);
	IF st ->> 'provider_progress' ~ '^[0-9]+(\.[0-9]+)?$' THEN
		progress := (st ->> 'provider_progress')::numeric;
	END IF;
	IF progress > 0 AND progress < 100 AND elapsed > 0 THEN
		remaining := elapsed * (100 - progress) / progress;
		margin := greatest(base, 0.05 * (elapsed + remaining));
		IF remaining > 2 * margin THEN
			RETURN ((remaining - margin) / 2)::bigint;
		END IF;
	ELSIF typical IS NOT NULL THEN
		remaining := typical - elapsed;
		margin := greatest(base, 0.05 * typical);
		IF remaining > margin THEN
			RETURN (remaining - margin)::bigint;
		END IF;
	ELSE
		RETURN least(cap, base * power(1.5, greatest(coalesce((st ->> 'polls')::integer, 1)
													- coalesce((st ->> 'queue_polls')::integer, 0) - 1, 0)))::bigint;
	END IF;
	-- Near the expected end, or past it: the interval, growing as it runs
	-- late (a quarter of the delay so far).
	RETURN least(cap, greatest(base, -remaining / 4))::bigint;
END;
$$;

-- The decision after a poll that found the request still queued or
-- generating: poll again, keeping what the poll learnt.  generating says
-- whether the provider is generating it (not queued); since_ms is when it
-- started, when the provider's answers tell (xAI: at its submit); otherwise
-- the start is taken halfway between the last poll and this one.
CREATE FUNCTION hagen._poll_again(j hagen.job, provider_status text, queue_position jsonb,
								  progress jsonb, generating boolean, since_ms bigint DEFAULT NULL)
	RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	now_ms bigint := hagen._now_ms();
	st jsonb;
BEGIN
	st := jsonb_strip_nulls(jsonb_build_object(
		'provider_status', provider_status, 'queue_position', queue_position,
		'provider_progress', progress,
		'polls', coalesce((j.state ->> 'polls')::integer, 0) + 1,
		'polled_ms', now_ms,
		'queue_polls', CASE WHEN NOT generating
							THEN coalesce((j.state ->> 'queue_polls')::integer, 0) + 1 END,
		'generating_since_ms', CASE WHEN generating AND NOT j.state ? 'generating_since_ms'
			THEN coalesce(since_ms,
						  (now_ms + coalesce((j.state ->> 'polled_ms')::bigint,
											 (j.state ->> 'submitted_ms')::bigint, now_ms)) / 2) END,
		'typical_ms', CASE WHEN generating AND NOT j.state ? 'typical_ms'
			THEN coalesce(hagen._typical_generation_ms(j.provider, j.state ->> 'model'), 0) END));
	RETURN jsonb_build_object('action', 'advance', 'step', 'poll',
							  'delay_ms', hagen._poll_delay_ms(j.state || st, now_ms), 'state', st);
END;
$$;

-- What to keep when a poll finds the generation done: how long it took as
-- the engine saw it (from the estimated start to this answer), for the
-- model's typical time.  Not the provider's own figure (Fal.ai's
-- metrics.inference_time): the expected end is reckoned on the engine's
-- clock, from its own estimate of the start, and a provider's figure may
-- leave out time it spends around the inference (or, in a simulator, be
-- in simulated time).
CREATE FUNCTION hagen._poll_done(j hagen.job) RETURNS jsonb
	LANGUAGE sql VOLATILE
	RETURN jsonb_strip_nulls(jsonb_build_object('polled_ms', hagen._now_ms(),
		'generation_ms', hagen._now_ms() - coalesce((j.state ->> 'generating_since_ms')::bigint,
													(j.state ->> 'submitted_ms')::bigint)));
