-- hagenkit install script, part 30: the job engine.
--
-- Workers (C) call three functions:
--   hagen.claim_jobs(lane, n)            -> due jobs, each with a lease token and one effect
--   hagen.complete_job(job, token, outcome) -> SQL interprets what happened and decides
--   hagen.next_due(lane)                 -> how long a worker may sleep
-- A job advances through persisted steps.  Every decision (what a step needs,
-- how an answer is read, whether to retry, what follows) is taken here; the
-- adapters for each job kind and provider plug in through _effect/_interpret.

-- How many times one step may be tried before the job fails.
CREATE FUNCTION hagen._max_attempts() RETURNS integer
	LANGUAGE sql STABLE RETURN hagen._setting('hagen.max_attempts', '8')::integer;

-- Puts a job in the queue unless an equivalent live job exists; returns its id or NULL.
-- Its lane is the one its first step runs on unless given.
CREATE FUNCTION hagen._enqueue(project uuid, clip uuid, kind text, provider text,
							   step text, state jsonb, lane text DEFAULT NULL,
							   time_limit interval DEFAULT NULL)
	RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	new_id bigint;
BEGIN
	INSERT INTO hagen.job (project_id, clip_id, kind, lane, provider, step, state, deadline_at)
	VALUES (project, clip, kind, coalesce(lane, hagen._step_lane(kind, step)), provider, step,
			state, now() + time_limit)
	ON CONFLICT DO NOTHING
	RETURNING id INTO new_id;
	IF new_id IS NOT NULL THEN
		PERFORM hagen._log(new_id, project, 'info', format('%s job queued', kind),
						   jsonb_build_object('step', step, 'clip_id', clip));
	END IF;
	RETURN new_id;
END;
$$;

-- Takes up a job whose worker died or hung: its step is re-run from its
-- recorded state.  A submit is the exception: it may have reached the
-- provider (and be billed), so unless hagen.resubmit_unconfirmed is on it
-- is not sent again; the job fails and hagen.retry_video() resends it.
CREATE FUNCTION hagen._recover(j hagen.job, reason text) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	IF j.kind IN ('clip', 'transition') AND j.step = 'submit'
	   AND NOT coalesce(hagen._setting('hagen.resubmit_unconfirmed', 'off')::boolean, false) THEN
		PERFORM hagen._apply(j, jsonb_build_object('action', 'fail', 'unconfirmed', true,
			'error', format('submit to %s unconfirmed: %s while the request was being sent. It may have reached the provider and be billed, so it was not sent again; hagen.retry_video() sends it again.',
							j.provider, reason)));
		RETURN;
	END IF;
	UPDATE hagen.job
	SET status = 'queued', run_at = now(), lease_token = NULL, lease_owner = NULL,
		lease_expires_at = NULL, last_error = reason
	WHERE id = j.id;
	PERFORM hagen._log(j.id, j.project_id, 'warning', reason || '; job taken up again',
					   jsonb_build_object('step', j.step));
END;
$$;

-- Takes up the running jobs of a lane whose worker is gone: with
-- expired_only, those whose lease has expired; otherwise (a worker
-- starting) those held by a backend that no longer exists.
CREATE FUNCTION hagen._recover_lane(lane text, expired_only boolean) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
	n integer := 0;
BEGIN
	FOR j IN SELECT * FROM hagen.job q
			 WHERE q.lane = _recover_lane.lane AND q.status = 'running'
			   AND CASE WHEN expired_only THEN q.lease_expires_at < now()
						ELSE NOT EXISTS (SELECT 1 FROM pg_stat_activity a
										 WHERE a.pid = q.lease_owner AND a.pid <> pg_backend_pid()) END
			 ORDER BY q.id FOR UPDATE SKIP LOCKED
	LOOP
		PERFORM hagen._recover(j, CASE WHEN expired_only THEN 'lease expired' ELSE 'worker restarted' END);
		n := n + 1;
	END LOOP;
	RETURN n;
END;
$$;

-- Called by a worker when it starts: the jobs of its lane held by a backend
-- that no longer exists are taken up at once instead of waiting for their
-- leases to expire.
CREATE FUNCTION hagen.recover_jobs(lane text) RETURNS integer
	LANGUAGE sql RETURN hagen._recover_lane(lane, false);

-- The milliseconds until the next job of a lane falls due (0 when one is due
-- now), or NULL when nothing is queued or leased.  PL/pgSQL, like every
-- function on the workers' path: its statements are planned once per
-- session, where a SQL function's body is parsed and planned at every call.
CREATE FUNCTION hagen.next_due(lane text) RETURNS bigint
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	t timestamptz;
BEGIN
	-- ORDER BY ... LIMIT 1, not min(): the planner's min() scanned every
	-- queued job of the lane (milliseconds per call under load).
	SELECT least(
		(SELECT run_at FROM hagen.job
		 WHERE status = 'queued' AND job.lane = next_due.lane ORDER BY run_at LIMIT 1),
		(SELECT lease_expires_at FROM hagen.job
		 WHERE status = 'running' AND job.lane = next_due.lane
		 ORDER BY lease_expires_at LIMIT 1)) INTO t;
	IF t IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN greatest(0, ceil(extract(epoch FROM (t - now())) * 1000))::bigint;
END;
$$;

-- Claims up to max_jobs due jobs of a lane for the calling worker.  Each
-- comes with a fresh lease token and the one effect its current step needs.
-- With steps, only jobs whose "kind:step" is listed (remote compile
-- workers, 62_remote.sql, take only the steps whose files go through the
-- bucket).
-- The due jobs are locked with one statement and leased with another,
-- whatever their number; only a job past its time limit, of a canceled
-- project, or whose effect cannot be prepared is handled on its own.
CREATE FUNCTION hagen.claim_jobs(lane text, max_jobs integer,
								 lease interval DEFAULT '2 minutes', steps text[] DEFAULT NULL)
	RETURNS TABLE (job_id bigint, token bigint, effect jsonb)
	LANGUAGE plpgsql AS $$
DECLARE
	due hagen.job[];
	odd hagen.job[];
	j hagen.job;
	eff jsonb;
	ids bigint[];
	toks bigint[];
	effs jsonb[];
BEGIN
	IF max_jobs IS NULL OR max_jobs <= 0 THEN
		RETURN;
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.job q WHERE q.lane = claim_jobs.lane AND q.status = 'running'
			   AND q.lease_expires_at < now()) THEN
		PERFORM hagen._recover_lane(claim_jobs.lane, true);
	END IF;

	SELECT array_agg(q.job) FILTER (WHERE NOT q.odd), array_agg(q.job) FILTER (WHERE q.odd)
	INTO due, odd
	FROM (SELECT q AS job, (q.deadline_at IS NOT NULL AND q.deadline_at < now()) OR q.cancel_requested
					 -- of a project canceled while this job's row was locked
					 -- (cancel_video skips those rather than wait for them)
					 OR (q.kind <> 'cancel' AND q.project_id IS NOT NULL
						 AND EXISTS (SELECT 1 FROM hagen.video_project v WHERE v.id = q.project_id
									 AND v.status = 'canceled')) AS odd
		  FROM hagen.job q
		  WHERE q.lane = claim_jobs.lane AND q.status = 'queued' AND q.run_at <= now()
			AND (claim_jobs.steps IS NULL OR q.kind || ':' || q.step = ANY (claim_jobs.steps))
		  ORDER BY q.run_at, q.id
		  LIMIT max_jobs
		  FOR UPDATE SKIP LOCKED) q;

	-- A job past its time limit, or of a canceled project, gets no effect.
	FOREACH j IN ARRAY coalesce(odd, '{}') LOOP
		IF j.deadline_at IS NOT NULL AND j.deadline_at < now() THEN
			PERFORM hagen._apply(j, jsonb_build_object('action', 'fail', 'error',
				format('%s job did not finish within its time limit (%s)', j.kind,
					   CASE WHEN j.kind IN ('compile', 'chunk') THEN 'hagen.compile_timeout'
							ELSE 'hagen.clip_timeout' END)));
			-- A request still at the provider is canceled there.
			IF j.request_id IS NOT NULL AND j.step IN ('poll', 'result') THEN
				PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', j.provider, 'cancel',
					jsonb_build_object('request_id', j.request_id, 'for_job', j.id,
									   'model', j.state ->> 'model', 'cancel_url', j.state ->> 'cancel_url'));
			END IF;
		ELSE
			PERFORM hagen._cancel_job(j);
		END IF;
	END LOOP;
	IF due IS NULL THEN
		RETURN;
	END IF;

	-- The effects first, all at once in a subtransaction; should one not be
	-- prepared, one job at a time, so that only that one fails.  Preparing
	-- an effect writes nothing: the jobs are leased below by the transaction
	-- that locked them.  (Leased by a subtransaction, a job's old row would
	-- get a MultiXact for xmax, the lock's and the update's, and its entry
	-- in job_due_idx could not be marked dead by the scans that pass it:
	-- they piled up at the head of the queue until VACUUM, and every claim
	-- and next_due walked them, milliseconds each under a backlog.)
	BEGIN
		SELECT array_agg(d.id), array_agg(hagen._effect(d)) INTO ids, effs FROM unnest(due) AS d;
	EXCEPTION WHEN others THEN
		ids := '{}';
		effs := '{}';
		FOREACH j IN ARRAY due LOOP
			BEGIN
				eff := hagen._effect(j);
			EXCEPTION WHEN others THEN
				PERFORM hagen._apply(j, jsonb_build_object('action', 'fail',
					'error', format('could not prepare step %s: %s', j.step, SQLERRM)));
				CONTINUE;
			END;
			ids := ids || j.id;
			effs := effs || eff;
		END LOOP;
	END;

	WITH leased AS (
		UPDATE hagen.job q
		SET status = 'running', lease_token = nextval('hagen.lease_token_seq'),
			lease_owner = pg_backend_pid(),
			lease_expires_at = now() + greatest(lease, make_interval(secs =>
				coalesce((e.eff ->> 'timeout_ms')::bigint, 60000) / 1000.0 + 60)),
			attempts = q.attempts + 1, total_attempts = q.total_attempts + 1,
			started_at = coalesce(q.started_at, now())
		FROM unnest(ids, effs) AS e(id, eff)
		WHERE q.id = e.id
		RETURNING q.id, q.lease_token, e.eff)
	SELECT array_agg(l.id), array_agg(l.lease_token), array_agg(l.eff) INTO ids, toks, effs
	FROM leased l;
	RETURN QUERY SELECT * FROM unnest(ids, toks, effs);
END;
$$;

-- Lets a worker that is still busy with a long effect (a compile) keep its
-- lease and report how far it has come ({"fraction": 0..1}; SQL alone turns
-- that into the project's percent).  Returns false when the lease was lost
-- or the job canceled.
CREATE FUNCTION hagen.heartbeat(job_id bigint, token bigint, progress jsonb DEFAULT NULL,
								extend interval DEFAULT '2 minutes')
	RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
BEGIN
	SELECT * INTO j FROM hagen.job WHERE id = heartbeat.job_id FOR UPDATE;
	IF NOT FOUND OR j.status <> 'running' OR j.lease_token IS DISTINCT FROM heartbeat.token THEN
		RETURN false;
	END IF;
	UPDATE hagen.job SET lease_expires_at = greatest(lease_expires_at, now() + extend)
	WHERE id = j.id;
	IF progress IS NOT NULL AND j.kind IN ('compile', 'chunk') THEN
		PERFORM hagen._compile_progress(j, j.step, (progress ->> 'fraction')::numeric);
	END IF;
	-- A project canceled while this job's row was locked (cancel_video
	-- skips those) stops its job here too.
	RETURN NOT j.cancel_requested
		AND NOT EXISTS (SELECT 1 FROM hagen.video_project v WHERE v.id = j.project_id
						AND v.status = 'canceled');
END;
$$;

-- Takes back what happened when a worker carried out an effect, and decides
-- what follows.  Returns 'applied', or 'stale' when the token is no longer
-- the job's (the job was recovered and claimed again meanwhile): a slow
-- worker never overwrites newer state.
CREATE FUNCTION hagen.complete_job(job_id bigint, token bigint, outcome jsonb)
	RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	RETURN hagen._complete_job(job_id, token, outcome, true);
END;
$$;

-- complete_job's work.  With careful, an error while reading the answer
-- becomes a retry of the step (in a subtransaction); without, it is raised,
-- and complete_jobs takes the batch again carefully.
CREATE FUNCTION hagen._complete_job(job_id bigint, token bigint, outcome jsonb, careful boolean)
	RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	j hagen.job;
	o jsonb := coalesce(outcome, '{}');
	decision jsonb;
BEGIN
	SELECT * INTO j FROM hagen.job WHERE id = _complete_job.job_id FOR UPDATE;
	IF NOT FOUND OR j.status <> 'running' OR j.lease_token IS DISTINCT FROM _complete_job.token THEN
		RETURN 'stale';
	END IF;

	o := hagen._read_outcome(o);
	IF careful THEN
		BEGIN
			decision := hagen._interpret(j, o);
		EXCEPTION WHEN others THEN
			decision := jsonb_build_object('action', 'retry',
				'error', format('could not interpret the answer to step %s: %s', j.step, SQLERRM));
		END;
	ELSE
		decision := hagen._interpret(j, o);
	END IF;
	IF decision IS NULL OR NOT decision ? 'action' THEN
		decision := jsonb_build_object('action', 'fail',
			'error', format('no decision for step %s of a %s job', j.step, j.kind));
	END IF;

	-- Canceled: flagged by cancel_video, or of a project canceled while a
	-- worker held this job's row (cancel_video skips those).
	IF j.cancel_requested
	   OR (j.kind <> 'cancel' AND j.project_id IS NOT NULL
		   AND EXISTS (SELECT 1 FROM hagen.video_project v WHERE v.id = j.project_id
					   AND v.status = 'canceled')) THEN
		-- Keep what we learnt (a provider request id above all, or a
		-- multipart upload to abort), then stop.
		IF decision ? 'request_id' OR decision ? 'state' THEN
			j.request_id := coalesce(decision ->> 'request_id', j.request_id);
			j.state := j.state || coalesce(decision -> 'state', '{}');
			UPDATE hagen.job SET request_id = j.request_id, state = j.state WHERE id = j.id;
		END IF;
		PERFORM hagen._cancel_job(j);
		RETURN 'applied';
	END IF;

	PERFORM hagen._apply(j, decision, o);
	RETURN 'applied';
END;
$$;

-- An outcome as the adapters read it: a JSON body is parsed once, so that
-- they see it as jsonb under "body".
CREATE FUNCTION hagen._read_outcome(o jsonb) RETURNS jsonb
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF o ? 'body_text' AND NOT o ? 'body' THEN
		RETURN o || jsonb_build_object('body', hagen._try_jsonb(o ->> 'body_text'));
	END IF;
	RETURN coalesce(o, '{}');
END;
$$;

-- Takes back many outcomes in one transaction: a JSON array of
-- {"job_id", "token", "outcome"}.  Returns how many were applied.  The jobs
-- are locked in the order of their projects with one statement, so that
-- two dispatchers handing back outcomes at once lock projects in the same
-- order, never in a cycle.
-- The outcomes of generations, fetches, provider cancels, purges and
-- cleanups are written for the whole batch at once: the ones that requeue their job (a next step, a retry) with one
-- UPDATE of the jobs and one INSERT of their log lines, the ones that end
-- it likewise, then their clips, compiles and projects with one UPDATE each
-- (_jobs_finished, and the statement trigger job_progress for the
-- progress).  The costs of a statement (planning a table's constraints,
-- triggers and partial indexes) are paid once a batch, not once an effect.
-- Reading the answer of any of these writes nothing, so deciding them all
-- before writing any changes nothing.  Every other outcome (a compile's, a
-- chunk's, a part's, one of a canceled job, one that schedules the parts of
-- an upload) is then taken on its own by _complete_job, which reads its job
-- again, as it always did.
-- All at once first, in one subtransaction; should one of them raise an
-- error, the batch is rolled back and taken again one outcome at a time,
-- each in a subtransaction of its own, so that only that one is failed (a
-- deadlock is not its fault: that outcome is tried again).
CREATE FUNCTION hagen.complete_jobs(outcomes jsonb) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	x record;
	j hagen.job;
	o jsonb;
	decision jsonb;
	r record;
	n integer := 0;
	try integer;
	given jsonb;
	this jsonb;
	ids bigint[];
	jobs hagen.job[] := '{}';
	lines hagen.job_log[] := '{}';
	ended hagen.job[] := '{}';
	ended_lines hagen.job_log[] := '{}';
	later jsonb[] := '{}';
BEGIN
	BEGIN
		-- The outcomes by job (the first of a job given twice) and the jobs.
		SELECT jsonb_object_agg(e.value ->> 'job_id', e.value), array_agg((e.value ->> 'job_id')::bigint)
		INTO given, ids
		FROM (SELECT e.value FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS e(value, i)
			  ORDER BY i DESC) AS e;
		FOR x IN
			SELECT l.q AS job, l.project_id, l.id,
				   (l.q).kind <> 'cancel' AND EXISTS (SELECT 1 FROM hagen.video_project v
						WHERE v.id = l.project_id AND v.status = 'canceled') AS of_canceled
			FROM (SELECT q, q.project_id, q.id FROM hagen.job q
				  WHERE q.id = ANY (ids)
				  ORDER BY q.project_id, q.id
				  FOR UPDATE) AS l
			ORDER BY l.project_id, l.id
		LOOP
			j := x.job;
			this := given -> j.id::text;
			IF j.status <> 'running' OR j.lease_token IS DISTINCT FROM (this ->> 'token')::bigint THEN
				CONTINUE;
			END IF;
			IF j.kind NOT IN ('clip', 'transition', 'fetch', 'cancel', 'purge', 'cleanup')
			   OR j.cancel_requested OR x.of_canceled THEN
				later := later || this;
				CONTINUE;
			END IF;
			o := hagen._read_outcome(this -> 'outcome');
			decision := hagen._interpret(j, o);
			IF decision IS NULL OR NOT decision ? 'action' OR (decision ->> 'schedule_parts')::boolean THEN
				later := later || this;
				CONTINUE;
			END IF;
			r := hagen._requeued(j, decision, o);
			IF (r.job).id IS NOT NULL THEN
				jobs := jobs || r.job;
				lines := lines || r.lines;
			ELSE
				r := hagen._finished(j, decision, o);
				ended := ended || r.job;
				ended_lines := ended_lines || r.lines;
			END IF;
			n := n + 1;
		END LOOP;
		-- The projects these generations move, all at once in the order of
		-- their ids (the trigger job_progress and _jobs_finished take them in
		-- a few statements): two dispatchers never wait on each other in a
		-- cycle.  (A fetch's project is not taken: a compile worker holds its
		-- compile's row, then the project's.)
		PERFORM 1 FROM hagen.video_project v
		WHERE v.id IN (SELECT q.project_id FROM unnest(jobs || ended) AS q
					   WHERE q.kind IN ('clip', 'transition'))
		ORDER BY v.id
		FOR UPDATE;
		PERFORM hagen._requeue_write(jobs, lines);
		PERFORM hagen._finish_write(ended, ended_lines);
		FOR x IN SELECT unnest(later) AS value LOOP
			IF hagen._complete_job((x.value ->> 'job_id')::bigint, (x.value ->> 'token')::bigint,
								   x.value -> 'outcome', false) = 'applied' THEN
				n := n + 1;
			END IF;
		END LOOP;
		RETURN n;
	EXCEPTION WHEN others THEN
		n := 0;
	END;
	FOR x IN SELECT o.value FROM jsonb_array_elements(outcomes) AS o
			 LEFT JOIN hagen.job q ON q.id = (o.value ->> 'job_id')::bigint
			 ORDER BY q.project_id, q.id
	LOOP
		FOR try IN 1 .. 3 LOOP
			BEGIN
				IF hagen.complete_job((x.value ->> 'job_id')::bigint, (x.value ->> 'token')::bigint,
									  x.value -> 'outcome') = 'applied' THEN
					n := n + 1;
				END IF;
				EXIT;
			EXCEPTION
				WHEN deadlock_detected OR lock_not_available OR serialization_failure THEN
					IF try = 3 THEN
						PERFORM hagen.fail_job((x.value ->> 'job_id')::bigint, (x.value ->> 'token')::bigint,
							'the outcome of this step could not be recorded: ' || SQLERRM);
					END IF;
				WHEN others THEN
					PERFORM hagen.fail_job((x.value ->> 'job_id')::bigint, (x.value ->> 'token')::bigint,
						'the outcome of this step could not be recorded: ' || SQLERRM);
					EXIT;
			END;
		END LOOP;
	END LOOP;
	RETURN n;
END;
$$;

-- Records a failure that happened in a worker outside any effect (for
-- example a crash of the C code that carried the effect out).
CREATE FUNCTION hagen.fail_job(job_id bigint, token bigint, error text)
	RETURNS text LANGUAGE sql AS $$
	SELECT hagen.complete_job(job_id, token,
		jsonb_build_object('status', 0, 'error', error, 'phase', 'worker'));
$$;

-- What a log line of a step says of its outcome.
-- (STABLE as jsonb_build_object is, so that it is inlined.)
CREATE FUNCTION hagen._step_summary(step text, attempt integer, outcome jsonb) RETURNS jsonb
	LANGUAGE sql STABLE AS $$
	SELECT jsonb_strip_nulls(jsonb_build_object('step', step, 'attempt', attempt,
		'http_status', outcome -> 'status', 'transport_error', outcome -> 'error',
		'elapsed_ms', outcome -> 'elapsed_ms'))
$$;

-- What every decision does to a job and its log: its state merged with
-- what the decision learnt, its request id kept, its lease given up; the
-- decision's own "log" line; and a line with the step's summary for the
-- caller to fill in.  (_requeued and _finished.)
CREATE FUNCTION hagen._decided(j hagen.job, decision jsonb, outcome jsonb,
							   OUT job hagen.job, OUT lines hagen.job_log[], OUT line hagen.job_log)
	LANGUAGE plpgsql AS $$
BEGIN
	job := j;
	job.state := j.state || coalesce(decision -> 'state', '{}');
	job.request_id := coalesce(decision ->> 'request_id', j.request_id);
	job.lease_token := NULL;
	job.lease_owner := NULL;
	job.lease_expires_at := NULL;
	line.job_id := j.id;
	line.project_id := j.project_id;
	line.detail := hagen._step_summary(j.step, j.attempts, outcome);
	lines := '{}';
	IF decision ? 'log' THEN
		line.level := 'info';
		line.message := decision ->> 'log';
		lines := lines || line;
	END IF;
END;
$$;

-- The job as a decision to advance to a step, or to retry this one after a
-- back-off, leaves it: queued again, its lease given up; and the lines that
-- say so in its log.  NULL (job and lines) for any other decision, and for
-- a retry with no attempts left (_apply fails the job then).  Written by
-- _requeue_write, one job (_apply) or a batch (complete_jobs) at a time.
CREATE FUNCTION hagen._requeued(j hagen.job, decision jsonb, outcome jsonb,
								OUT job hagen.job, OUT lines hagen.job_log[])
	LANGUAGE plpgsql AS $$
DECLARE
	action text := decision ->> 'action';
	delay interval;
	retry_after interval;
	d record;
	l hagen.job_log;
BEGIN
	IF action IS NULL OR action NOT IN ('advance', 'retry')
	   OR (action = 'retry' AND j.attempts >= coalesce((decision ->> 'max_attempts')::integer,
														hagen._max_attempts())) THEN
		RETURN;
	END IF;
	d := hagen._decided(j, decision, outcome);
	job := d.job;
	lines := d.lines;
	l := d.line;
	job.status := 'queued';
	IF action = 'advance' THEN
		delay := coalesce(make_interval(secs => (decision ->> 'delay_ms')::float8 / 1000), '0');
		job.step := coalesce(decision ->> 'step', j.step);
		job.lane := hagen._step_lane(j.kind, job.step);
		job.attempts := CASE WHEN decision ->> 'step' = j.step AND (decision ->> 'keep_attempts')::boolean
							 THEN j.attempts ELSE 0 END;
		job.last_error := NULL;
		job.submit_unconfirmed := coalesce((decision ->> 'unconfirmed')::boolean, false);
		IF decision ->> 'step' IS DISTINCT FROM j.step THEN
			l.level := 'info';
			l.message := format('step %s done; next: %s', j.step, decision ->> 'step');
			lines := lines || l;
		END IF;
	ELSE
		delay := hagen._backoff(j.attempts);
		retry_after := make_interval(secs => (decision ->> 'retry_after_ms')::float8 / 1000);
		IF retry_after IS NOT NULL AND retry_after > delay THEN
			delay := least(retry_after, interval '1 hour');
		END IF;
		job.last_error := decision ->> 'error';
		l.level := 'warning';
		l.message := format('step %s failed (attempt %s), retrying in %s ms: %s', j.step, j.attempts,
							round(extract(epoch FROM delay) * 1000), decision ->> 'error');
		l.detail := l.detail || jsonb_build_object('retry_in_ms', round(extract(epoch FROM delay) * 1000));
		lines := lines || l;
	END IF;
	job.run_at := now() + delay;
END;
$$;

-- Writes jobs as _requeued left them, and their log lines: two statements
-- for any number of jobs.
CREATE FUNCTION hagen._requeue_write(jobs hagen.job[], lines hagen.job_log[]) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	IF cardinality(jobs) > 0 THEN
		UPDATE hagen.job q
		SET status = r.status, step = r.step, state = r.state, lane = r.lane, request_id = r.request_id,
			attempts = r.attempts, run_at = r.run_at, lease_token = NULL, lease_owner = NULL,
			lease_expires_at = NULL, last_error = r.last_error, submit_unconfirmed = r.submit_unconfirmed
		FROM unnest(jobs) AS r
		WHERE q.id = r.id;
	END IF;
	IF cardinality(lines) > 0 THEN
		INSERT INTO hagen.job_log (job_id, project_id, level, message, detail)
		SELECT l.job_id, l.project_id, l.level, l.message, l.detail FROM unnest(lines) AS l;
	END IF;
END;
$$;

-- The job as a decision to fail it, or to record its success, leaves it,
-- and the lines that say so in its log.  A retry arrives here only with no
-- attempts left (_requeued declined it): the job fails.  Written by
-- _finish_write, one job (_apply) or a batch (complete_jobs) at a time.
CREATE FUNCTION hagen._finished(j hagen.job, decision jsonb, outcome jsonb,
								OUT job hagen.job, OUT lines hagen.job_log[])
	LANGUAGE plpgsql AS $$
DECLARE
	action text := decision ->> 'action';
	err text := decision ->> 'error';
	d record;
	l hagen.job_log;
BEGIN
	IF action = 'retry' THEN
		action := 'fail';
		err := format('gave up on step %s after %s attempts: %s', j.step, j.attempts, err);
	END IF;
	IF action IS NULL OR action NOT IN ('fail', 'succeed') THEN
		RAISE EXCEPTION 'unknown job decision "%"', action;
	END IF;
	d := hagen._decided(j, decision, outcome);
	job := d.job;
	lines := d.lines;
	l := d.line;
	job.finished_at := now();
	IF action = 'fail' THEN
		job.status := 'failed';
		job.last_error := err;
		job.submit_unconfirmed := coalesce((decision ->> 'unconfirmed')::boolean, j.submit_unconfirmed);
		l.level := 'error';
		l.message := err;
	ELSE
		job.status := 'succeeded';
		job.last_error := NULL;
		job.cost_cents := coalesce((decision ->> 'cost_cents')::integer, j.cost_cents);
		l.level := 'info';
		l.message := format('%s job succeeded', j.kind);
	END IF;
	lines := lines || l;
END;
$$;

-- Writes jobs as _finished left them and their log lines, then records
-- their ends (_jobs_finished): a few statements for any number of jobs.
CREATE FUNCTION hagen._finish_write(jobs hagen.job[], lines hagen.job_log[]) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	ended hagen.job[];
BEGIN
	IF cardinality(jobs) = 0 THEN
		RETURN;
	END IF;
	WITH w AS (
		UPDATE hagen.job q
		SET status = r.status, state = r.state, request_id = r.request_id, last_error = r.last_error,
			cost_cents = r.cost_cents, submit_unconfirmed = r.submit_unconfirmed,
			lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, finished_at = r.finished_at
		FROM unnest(jobs) AS r
		WHERE q.id = r.id
		RETURNING q AS job)
	SELECT array_agg(w.job ORDER BY (w.job).project_id, (w.job).id) INTO ended FROM w;
	INSERT INTO hagen.job_log (job_id, project_id, level, message, detail)
	SELECT l.job_id, l.project_id, l.level, l.message, l.detail FROM unnest(lines) AS l;
	PERFORM hagen._jobs_finished(ended);
END;
$$;

-- Applies a decision to a job: advance to a step, retry the step after a
-- back-off (_requeued), fail, or succeed (_finished).  Logs what it does.
-- (What the change means for the job's project is counted by the trigger
-- job_progress.)
CREATE FUNCTION hagen._apply(j hagen.job, decision jsonb, outcome jsonb DEFAULT NULL)
	RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	r record;
BEGIN
	r := hagen._requeued(j, decision, outcome);
	IF (r.job).id IS NOT NULL THEN
		PERFORM hagen._requeue_write(ARRAY[r.job], r.lines);
		IF (decision ->> 'schedule_parts')::boolean THEN
			PERFORM hagen._upload_schedule(j.id);
		END IF;
		RETURN;
	END IF;
	r := hagen._finished(j, decision, outcome);
	PERFORM hagen._finish_write(ARRAY[r.job], r.lines);
END;
$$;

-- Cancels a job: a provider request already made gets a cancel request of
-- its own; the job's clip is marked canceled.
CREATE FUNCTION hagen._cancel_job(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
BEGIN
	UPDATE hagen.job
	SET status = 'canceled', lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL,
		finished_at = now(), last_error = 'canceled'
	WHERE id = j.id
	RETURNING * INTO j;
	PERFORM hagen._log(j.id, j.project_id, 'info', format('%s job canceled', j.kind),
					   jsonb_build_object('step', j.step));
	IF j.request_id IS NOT NULL AND j.kind IN ('clip', 'transition')
	   AND j.step IN ('submit', 'poll', 'result') THEN
		PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', j.provider, 'cancel',
			jsonb_build_object('request_id', j.request_id, 'for_job', j.id, 'model', j.state ->> 'model',
							   'cancel_url', j.state ->> 'cancel_url'));
	END IF;
	PERFORM hagen._job_finished(j);
END;
$$;

-- The effect the current step of a job needs, by job kind.
CREATE FUNCTION hagen._effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.kind
	WHEN 'clip', 'transition' THEN RETURN hagen._generation_effect(j);
	WHEN 'compile' THEN RETURN hagen._compile_effect(j);
	WHEN 'chunk' THEN RETURN hagen._chunk_effect(j);
	WHEN 'cancel' THEN RETURN hagen._provider_cancel_effect(j);
	WHEN 'upload_part' THEN RETURN hagen._upload_part_effect(j);
	WHEN 'purge' THEN RETURN hagen._purge_effect(j);
	WHEN 'fetch' THEN RETURN hagen._fetch_effect(j);
	WHEN 'cleanup' THEN RETURN hagen._cleanup_effect(j);
	END CASE;
	RAISE EXCEPTION 'unknown job kind "%"', j.kind;
END;
$$;

-- How to read the outcome of the current step of a job, by job kind.
CREATE FUNCTION hagen._interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
BEGIN
	CASE j.kind
	WHEN 'clip', 'transition' THEN RETURN hagen._generation_interpret(j, o);
	WHEN 'compile' THEN RETURN hagen._compile_interpret(j, o);
	WHEN 'chunk' THEN RETURN hagen._chunk_interpret(j, o);
	WHEN 'cancel' THEN RETURN hagen._provider_cancel_interpret(j, o);
	WHEN 'upload_part' THEN RETURN hagen._upload_part_interpret(j, o);
	WHEN 'purge' THEN RETURN hagen._purge_interpret(j, o);
	WHEN 'fetch' THEN RETURN hagen._fetch_interpret(j, o);
	WHEN 'cleanup' THEN RETURN hagen._cleanup_interpret(j, o);
	END CASE;
	RAISE EXCEPTION 'unknown job kind "%"', j.kind;
END;
$$;

-- The decision for an answer that failed in a way worth retrying (transport
-- errors, 429 and 5xx), honouring Retry-After; or NULL when it did not.
CREATE FUNCTION hagen._transient(o jsonb, what text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	ra text := o -> 'headers' ->> 'retry-after';
	ra_ms bigint;
BEGIN
	IF status <> 0 AND status <> 429 AND status < 500 THEN
		RETURN NULL;
	END IF;
	IF ra ~ '^\s*\d+(\.\d+)?\s*$' THEN
		ra_ms := (ra::numeric * 1000)::bigint;
	END IF;
	RETURN jsonb_strip_nulls(jsonb_build_object('action', 'retry', 'retry_after_ms', ra_ms,
		'error', CASE WHEN status = 0
					  THEN format('%s: %s', what, coalesce(o ->> 'error', 'no answer'))
					  ELSE format('%s: HTTP %s%s', what, status,
								  coalesce(': ' || left(hagen._error_text(o), 300), '')) END));
END;
$$;

-- A short readable error from an answer body: a JSON "detail" (string or
-- list of {msg}), an "error" / "message" field, an S3 XML Code/Message, or
-- the start of the body.
CREATE FUNCTION hagen._error_text(o jsonb) RETURNS text
	LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	b jsonb := o -> 'body';
	t text := o ->> 'body_text';
	d jsonb;
	r text;
BEGIN
	IF o ? 'error' AND o ->> 'error' IS NOT NULL AND coalesce((o ->> 'status')::integer, 0) = 0 THEN
		RETURN o ->> 'error';
	END IF;
	IF jsonb_typeof(b) = 'object' THEN
		d := b -> 'detail';
		IF jsonb_typeof(d) = 'string' THEN
			RETURN d #>> '{}';
		ELSIF jsonb_typeof(d) = 'array' THEN
			SELECT string_agg(coalesce(e ->> 'msg', e #>> '{}')
							  || coalesce(' (' || (e ->> 'type') || ')', ''), '; ')
			INTO r FROM jsonb_array_elements(d) AS e;
			RETURN r;
		ELSIF jsonb_typeof(b -> 'error') = 'string' THEN
			RETURN b ->> 'error';
		ELSIF jsonb_typeof(b -> 'error') = 'object' THEN
			RETURN coalesce(b -> 'error' ->> 'message', b ->> 'error');
		ELSIF b ? 'message' THEN
			RETURN b ->> 'message';
		END IF;
	END IF;
	IF t ~ '<Code>' THEN
		RETURN coalesce(hagen._s3_error(o), hagen._xml_value(t, 'Code'));
	END IF;
	RETURN nullif(left(regexp_replace(coalesce(t, ''), '\s+', ' ', 'g'), 200), '');
END;
$$;
