-- hagenkit install script, part 62: compile workers on other hosts.
--
-- `hagen-compile worker --dsn ...` runs on any machine and carries out the
-- effects of the compile lane like the compile workers inside the server,
-- through five functions, the only ones its role (hagen_worker) may call:
--   hagen.worker_claim(worker, max_jobs)   -> (job_id, token, effect)
--   hagen.worker_heartbeat(job_id, token, fraction) -> false: stop
--   hagen.worker_complete(job_id, token, outcome)   -> 'applied' | 'stale'
--   hagen.worker_release(job_id, token)    hands a job back (stopping)
--   hagen.worker_next_due()                -> ms until the next job is due
-- They call the engine's claim_jobs / heartbeat / complete_job for the
-- compile lane.  A remote worker holds no key and no secret: the effect it
-- gets names every input and output with a presigned URL (GET for inputs,
-- PUT for outputs), made at each claim, so a retry always gets fresh ones.
-- It stores its outputs itself and says so ("uploaded": true), which ends
-- the compile without the storing steps of the http lane.  Its lease is
-- short (hagen.worker_lease) and renewed by its heartbeats, so the job of
-- a host that died is taken up again within that time.  A NOTIFY on
-- hagen_compile wakes the workers when a job of the compile lane is
-- queued; hagen.compile_workers lists the workers seen.

-- The workers seen, by the name they give.
CREATE TABLE hagen.remote_worker (
	name				text PRIMARY KEY,
	first_seen			timestamptz NOT NULL DEFAULT now(),
	last_seen			timestamptz NOT NULL DEFAULT now(),
	last_address		inet,
	jobs_done			bigint NOT NULL DEFAULT 0,
	jobs_failed			bigint NOT NULL DEFAULT 0,
	jobs_handed_back	bigint NOT NULL DEFAULT 0
);

-- The claims made through hagen.worker_claim: which worker holds which job
-- under which token.  A remote worker acts only on jobs it claimed.
CREATE TABLE hagen.remote_lease (
	job_id		bigint NOT NULL REFERENCES hagen.job (id) ON DELETE CASCADE,
	token		bigint NOT NULL,
	worker		text NOT NULL REFERENCES hagen.remote_worker (name) ON DELETE CASCADE,
	claimed_at	timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (job_id, token)
);
CREATE INDEX remote_lease_worker_idx ON hagen.remote_lease (worker);

-- Whether every effect of the compile lane runs on other hosts: the server
-- runs no compile worker (hagen.compile_workers, a restart setting, is 0).
-- Then photos are fitted through the bucket (83_images.sql) and a compile
-- does not fetch the stored clips to the database host (60_compile.sql).
CREATE FUNCTION hagen._compiles_elsewhere() RETURNS boolean
	LANGUAGE sql STABLE
	RETURN coalesce(hagen._setting('hagen.compile_workers', '1')::integer, 1) = 0;

-- The steps a worker on another host can carry out ("kind:step"): those
-- whose effect names every file it reads and writes by a storage key (a
-- compile in one run; or split: its plan, its chunks, its join).  The
-- photo framing of clip jobs (image_frame) also runs on the compile lane:
-- on files of the database host's work directory while the server has
-- compile workers of its own, through the bucket when it has none
-- (hagen._compiles_elsewhere, 83_images.sql).
CREATE FUNCTION hagen._remote_steps() RETURNS text[]
	LANGUAGE sql STABLE
	RETURN ARRAY['compile:compile', 'compile:plan', 'chunk:encode', 'compile:join']
		|| CASE WHEN hagen._compiles_elsewhere() THEN ARRAY['clip:image_frame', 'transition:image_frame']
				ELSE '{}'::text[] END;

-- The lease of a job claimed by a remote worker, renewed by its heartbeats.
CREATE FUNCTION hagen._worker_lease() RETURNS interval
	LANGUAGE sql STABLE RETURN hagen._setting_interval('hagen.worker_lease', '1 minute');

-- How long the presigned URLs of a remote effect live, in seconds: the
-- effect's time limit plus hagen.worker_url_margin (1 s to 7 days).
CREATE FUNCTION hagen._worker_url_seconds(timeout_ms bigint) RETURNS integer
	LANGUAGE sql STABLE
	RETURN least(604800, greatest(1, ceil(coalesce(timeout_ms, 0) / 1000.0
		+ extract(epoch FROM hagen._setting_interval('hagen.worker_url_margin', '15 minutes')))))::integer;

-- The largest file one presigned PUT may carry: R2's limit of a single
-- upload (5 GiB - 5 MiB).
CREATE FUNCTION hagen._worker_max_put_bytes() RETURNS bigint
	LANGUAGE sql IMMUTABLE RETURN 5 * 1073741824::bigint - 5 * 1048576;

-- Checks the name a worker gives: 1 to 100 printable characters.
CREATE FUNCTION hagen._check_worker_name(worker text) RETURNS void
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF worker IS NULL OR worker !~ '^[[:graph:]]{1,100}$' THEN
		RAISE EXCEPTION 'invalid worker name "%"', coalesce(left(worker, 120), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A worker name is 1 to 100 printable characters without spaces, such as "host-1" (hagen-compile worker --name).';
	END IF;
END;
$$;

-- A compile-lane effect made for a worker on another host: every input
-- with a presigned GET URL, every output with a presigned PUT URL (and the
-- largest size one PUT may carry), all expiring together.  Any effect of
-- the compile lane has this shape (type "compile", dir, manifest, inputs
-- and outputs with storage keys); one without a key cannot be carried out
-- elsewhere and raises.
CREATE FUNCTION hagen._remote_effect(eff jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	seconds integer := hagen._worker_url_seconds((eff ->> 'timeout_ms')::bigint);
	x jsonb;
	inputs jsonb := '[]';
	outputs jsonb := '[]';
BEGIN
	IF eff ->> 'type' IS DISTINCT FROM 'compile' THEN
		RAISE EXCEPTION 'a remote worker cannot carry out an effect of type "%"', coalesce(eff ->> 'type', 'NULL');
	END IF;
	FOR x IN SELECT * FROM jsonb_array_elements(coalesce(eff -> 'inputs', '[]')) LOOP
		IF x ->> 'key' IS NULL THEN
			RAISE EXCEPTION 'input "%" names no storage key', x ->> 'file';
		END IF;
		PERFORM hagen._check_key(x ->> 'key');
		inputs := inputs || jsonb_build_array(x || jsonb_build_object('url',
			hagen._presign(hagen._s3_url(x ->> 'key'), 'GET', seconds, now())));
	END LOOP;
	FOR x IN SELECT * FROM jsonb_array_elements(coalesce(eff -> 'outputs', '[]')) LOOP
		IF x ->> 'key' IS NULL THEN
			RAISE EXCEPTION 'output "%" names no storage key', x ->> 'file';
		END IF;
		PERFORM hagen._check_key(x ->> 'key');
		outputs := outputs || jsonb_build_array(x || jsonb_build_object('url',
			hagen._presign(hagen._s3_url(x ->> 'key'), 'PUT', seconds, now()),
			'max_bytes', hagen._worker_max_put_bytes()));
	END LOOP;
	RETURN eff || jsonb_build_object('inputs', inputs, 'outputs', outputs, 'urls_expire_in', seconds,
		'lease_ms', (extract(epoch FROM hagen._worker_lease()) * 1000)::bigint);
END;
$$;

-- The claim a remote worker holds on a job under a token, or NULL when it
-- holds none (the call is then stale).  A job of another lane is refused
-- outright: the role can reach nothing but the compile lane.
CREATE FUNCTION hagen._remote_claim(job_id bigint, token bigint) RETURNS hagen.remote_lease
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	l hagen.remote_lease;
BEGIN
	SELECT * INTO l FROM hagen.remote_lease r WHERE r.job_id = _remote_claim.job_id AND r.token = _remote_claim.token;
	IF FOUND THEN
		RETURN l;
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.job j WHERE j.id = _remote_claim.job_id AND j.lane <> 'compile') THEN
		RAISE EXCEPTION 'job % is not a job of the compile lane', job_id
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Remote workers carry out compile-lane jobs only, and only those they claimed with hagen.worker_claim.';
	END IF;
	RETURN NULL;
END;
$$;

-- Claims up to max_jobs due jobs of the compile lane for the worker named
-- (1 to 64), each with a fresh lease token and its effect made for a
-- remote host.  Also records that the worker was seen.
CREATE FUNCTION hagen.worker_claim(worker text, max_jobs integer DEFAULT 1)
	RETURNS TABLE (job_id bigint, token bigint, effect jsonb)
	LANGUAGE plpgsql AS $$
DECLARE
	c record;
	j hagen.job;
	eff jsonb;
	err text;
BEGIN
	PERFORM hagen._check_worker_name(worker);
	IF max_jobs IS NULL OR max_jobs NOT BETWEEN 1 AND 64 THEN
		RAISE EXCEPTION 'invalid max_jobs %', coalesce(max_jobs::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A worker claims 1 to 64 jobs at once (hagen-compile worker --jobs).';
	END IF;
	INSERT INTO hagen.remote_worker AS w (name, last_address) VALUES (worker, inet_client_addr())
	ON CONFLICT (name) DO UPDATE SET last_seen = now(), last_address = excluded.last_address;
	-- Claims nobody will report on any more.
	DELETE FROM hagen.remote_lease l
	WHERE l.claimed_at < now() - interval '1 day'
	  AND NOT EXISTS (SELECT 1 FROM hagen.job q WHERE q.id = l.job_id AND q.lease_token = l.token
					  AND q.status = 'running');

	FOR c IN SELECT * FROM hagen.claim_jobs('compile', max_jobs, hagen._worker_lease(), hagen._remote_steps()) LOOP
		SELECT * INTO j FROM hagen.job q WHERE q.id = c.job_id;
		err := NULL;
		BEGIN
			eff := hagen._remote_effect(c.effect);
		EXCEPTION WHEN others THEN
			err := SQLERRM;
		END;
		IF err IS NOT NULL THEN
			PERFORM hagen.fail_job(c.job_id, c.token,
				format('could not prepare step %s for a remote worker: %s', j.step, err));
			CONTINUE;
		END IF;
		-- A short lease, kept by heartbeats every 2 s.
		UPDATE hagen.job q SET lease_expires_at = now() + hagen._worker_lease() WHERE q.id = c.job_id;
		INSERT INTO hagen.remote_lease (job_id, token, worker) VALUES (c.job_id, c.token, worker);
		PERFORM hagen._log(c.job_id, j.project_id, 'info', format('claimed by remote worker %s', worker),
						   jsonb_strip_nulls(jsonb_build_object('step', j.step, 'attempt', j.attempts,
							   'address', inet_client_addr()::text)));
		UPDATE hagen.video_project p
		SET progress = jsonb_set(p.progress, '{label}', '"Compiling the video"')
		WHERE p.id = j.project_id AND p.progress ->> 'label' = 'Waiting for a compile worker';
		job_id := c.job_id;
		token := c.token;
		effect := eff;
		RETURN NEXT;
	END LOOP;
END;
$$;

-- Keeps a remote worker's lease for another hagen.worker_lease and carries
-- how far the helper has come (0 to 1, NULL when unchanged).  False means
-- stop: the job was canceled, or the lease was lost to another worker.
CREATE FUNCTION hagen.worker_heartbeat(job_id bigint, token bigint, fraction double precision DEFAULT NULL)
	RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
	l hagen.remote_lease := hagen._remote_claim(job_id, token);
	ok boolean;
BEGIN
	IF fraction IS NOT NULL AND (fraction < 0 OR fraction > 1 OR fraction = 'NaN') THEN
		RAISE EXCEPTION 'invalid fraction %', fraction
			USING ERRCODE = 'invalid_parameter_value', HINT = 'A fraction is between 0 and 1.';
	END IF;
	IF l.job_id IS NULL THEN
		RETURN false;
	END IF;
	ok := hagen.heartbeat(job_id, token,
						  CASE WHEN fraction IS NOT NULL THEN jsonb_build_object('fraction', fraction) END,
						  hagen._worker_lease());
	-- The worker may have reconnected: its lease is held by its new session.
	UPDATE hagen.job q SET lease_owner = pg_backend_pid()
	WHERE q.id = l.job_id AND q.lease_token = l.token AND q.status = 'running'
	  AND q.lease_owner IS DISTINCT FROM pg_backend_pid();
	UPDATE hagen.remote_worker w SET last_seen = now() WHERE w.name = l.worker;
	RETURN ok;
END;
$$;

-- Hands back what a remote worker's effect came to: {"status": "ok",
-- "result": {...}, "uploaded": true} once it stored every output, or
-- {"status": "error", "error": ..., "segment": N}; a failed transfer also
-- carries "transfer": {"what", "key", "status", "body_text"}, from which
-- the error is written here (S3 error XML read like the dispatcher's), and
-- "stats" ({download_bytes, download_ms, compile_ms, upload_bytes,
-- upload_ms}) goes into the job log.  Returns 'applied', or 'stale' when
-- the job is no longer the worker's.
CREATE FUNCTION hagen.worker_complete(job_id bigint, token bigint, outcome jsonb)
	RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	l hagen.remote_lease := hagen._remote_claim(job_id, token);
	o jsonb := outcome;
	t jsonb := outcome -> 'transfer';
	s jsonb := outcome -> 'stats';
	p uuid;
	r text;
BEGIN
	IF jsonb_typeof(o) IS DISTINCT FROM 'object' OR o ->> 'status' IS NULL
	   OR o ->> 'status' NOT IN ('ok', 'error') THEN
		RAISE EXCEPTION 'invalid outcome of a remote worker: %', left(coalesce(o::text, 'NULL'), 200)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'An outcome is {"status": "ok", "result": {...}, "uploaded": true} or {"status": "error", "error": "..."}.';
	ELSIF o ->> 'status' = 'ok' AND (o -> 'uploaded') IS DISTINCT FROM 'true'::jsonb THEN
		RAISE EXCEPTION 'a remote worker''s outcome must say "uploaded": true'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Its outputs are on its own host: it stores them through the presigned URLs of the effect before it completes the job.';
	END IF;
	IF l.job_id IS NULL THEN
		RETURN 'stale';
	END IF;
	IF jsonb_typeof(t) = 'object' AND (t ->> 'status') ~ '^[0-9]+$' AND (t ->> 'status')::integer > 0 THEN
		o := o || jsonb_build_object('error', hagen._s3_failure(jsonb_build_object(
			'status', (t ->> 'status')::integer, 'body_text', t ->> 'body_text'),
			format('%s of %s', coalesce(t ->> 'what', 'transfer'), t ->> 'key')) ->> 'error');
	END IF;
	o := o || jsonb_build_object('worker', l.worker);
	SELECT q.project_id INTO p FROM hagen.job q WHERE q.id = l.job_id;
	IF jsonb_typeof(s) = 'object' THEN
		PERFORM hagen._log(l.job_id, p, 'info',
			format('remote worker %s: inputs %s bytes in %s ms, helper %s ms, outputs %s bytes in %s ms',
				   l.worker, s ->> 'download_bytes', s ->> 'download_ms', s ->> 'compile_ms',
				   s ->> 'upload_bytes', s ->> 'upload_ms'),
			jsonb_build_object('worker', l.worker, 'stats', s));
	END IF;
	r := hagen.complete_job(l.job_id, l.token, o);
	DELETE FROM hagen.remote_lease x WHERE x.job_id = l.job_id AND x.token = l.token;
	UPDATE hagen.remote_worker w
	SET last_seen = now(),
		jobs_done = jobs_done + CASE WHEN r = 'applied' AND o ->> 'status' = 'ok' THEN 1 ELSE 0 END,
		jobs_failed = jobs_failed + CASE WHEN r = 'applied' AND o ->> 'status' = 'error' THEN 1 ELSE 0 END
	WHERE w.name = l.worker;
	RETURN r;
END;
$$;

-- Hands a job back (a worker stopping before it finished): queued again at
-- once, without counting the attempt.  False when it was no longer the
-- worker's.
CREATE FUNCTION hagen.worker_release(job_id bigint, token bigint) RETURNS boolean
	LANGUAGE plpgsql AS $$
DECLARE
	l hagen.remote_lease := hagen._remote_claim(job_id, token);
	j hagen.job;
BEGIN
	IF l.job_id IS NULL THEN
		RETURN false;
	END IF;
	DELETE FROM hagen.remote_lease x WHERE x.job_id = l.job_id AND x.token = l.token;
	SELECT * INTO j FROM hagen.job q WHERE q.id = l.job_id FOR UPDATE;
	IF NOT FOUND OR j.status <> 'running' OR j.lease_token IS DISTINCT FROM l.token THEN
		RETURN false;
	END IF;
	IF j.cancel_requested THEN
		PERFORM hagen._cancel_job(j);
	ELSE
		UPDATE hagen.job q
		SET status = 'queued', run_at = now(), lease_token = NULL, lease_owner = NULL,
			lease_expires_at = NULL, attempts = greatest(q.attempts - 1, 0)
		WHERE q.id = j.id;
		PERFORM hagen._log(j.id, j.project_id, 'info',
			format('handed back by remote worker %s (stopping); queued again', l.worker),
			jsonb_build_object('step', j.step, 'worker', l.worker));
	END IF;
	UPDATE hagen.remote_worker w SET last_seen = now(), jobs_handed_back = jobs_handed_back + 1
	WHERE w.name = l.worker;
	RETURN true;
END;
$$;

-- Milliseconds until the next job a remote worker can take falls due (0:
-- one is due now; a lease running out counts), NULL when there is none.
CREATE FUNCTION hagen.worker_next_due() RETURNS bigint
	LANGUAGE sql STABLE AS $$
	SELECT CASE WHEN t IS NOT NULL
				THEN greatest(0, ceil(extract(epoch FROM (t - now())) * 1000))::bigint END
	FROM (SELECT least(
			(SELECT run_at FROM hagen.job
			 WHERE status = 'queued' AND lane = 'compile' AND kind || ':' || step = ANY (hagen._remote_steps())
			 ORDER BY run_at LIMIT 1),
			(SELECT lease_expires_at FROM hagen.job
			 WHERE status = 'running' AND lane = 'compile' AND kind || ':' || step = ANY (hagen._remote_steps())
			 ORDER BY lease_expires_at LIMIT 1)) AS t) AS due;
$$;

-- A job remote workers can take queued: NOTIFY hagen_compile wakes them at
-- commit (one notification per transaction, PostgreSQL folds
-- the same payload).  With no compile worker in the server, a project
-- whose job is due says that it waits for one.  Which steps remote workers
-- take is asked here, not in the trigger's WHEN: a WHEN clause is prepared
-- again by every statement that writes a job, and preparing the call of
-- _remote_steps() (inlined with _compiles_elsewhere) cost about 50 us of
-- each (pgbench, one job update: 0.31 ms against 0.26 ms).
CREATE FUNCTION hagen._compile_lane_queued() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	IF NOT (NEW.kind || ':' || NEW.step = ANY (hagen._remote_steps())) THEN
		RETURN NULL;
	END IF;
	PERFORM pg_notify('hagen_compile', '');
	IF NEW.run_at <= now() AND NEW.project_id IS NOT NULL
	   AND hagen._setting('hagen.compile_workers', '1') = '0' THEN
		UPDATE hagen.video_project p
		SET progress = jsonb_set(p.progress, '{label}', '"Waiting for a compile worker"')
		WHERE p.id = NEW.project_id AND p.status = 'compiling'
		  AND p.progress ->> 'label' IS DISTINCT FROM 'Waiting for a compile worker';
	END IF;
	RETURN NULL;
END;
$$;
CREATE TRIGGER job_compile_lane_queued AFTER INSERT OR UPDATE OF status, run_at, lane ON hagen.job
	FOR EACH ROW WHEN (NEW.lane = 'compile' AND NEW.status = 'queued')
	EXECUTE FUNCTION hagen._compile_lane_queued();

-- For operators: every remote worker seen, when, what it did, and the jobs
-- it holds now.
CREATE VIEW hagen.compile_workers AS
SELECT w.name, w.last_address AS address, w.first_seen, w.last_seen, now() - w.last_seen AS silent_for,
	   w.jobs_done, w.jobs_failed, w.jobs_handed_back,
	   coalesce(cur.jobs, '{}') AS current_jobs, coalesce(cur.projects, '{}') AS current_projects
FROM hagen.remote_worker w
LEFT JOIN LATERAL (
	SELECT array_agg(j.id ORDER BY j.id) AS jobs, array_agg(j.project_id ORDER BY j.id) AS projects
	FROM hagen.remote_lease l JOIN hagen.job j ON j.id = l.job_id AND j.lease_token = l.token
	WHERE l.worker = w.name AND j.status = 'running') cur ON true;

-- The role remote workers log in with (the DBA grants it to a login role):
-- the five functions above and nothing else; no table, no setting.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hagen_worker') THEN
		CREATE ROLE hagen_worker NOLOGIN;
	END IF;
END;
$$;
ALTER FUNCTION hagen.worker_claim(text, integer) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.worker_heartbeat(bigint, bigint, double precision)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.worker_complete(bigint, bigint, jsonb)
	SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.worker_release(bigint, bigint) SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
ALTER FUNCTION hagen.worker_next_due() SECURITY DEFINER SET search_path = pg_catalog, hagen, pg_temp;
REVOKE ALL ON FUNCTION hagen.worker_claim(text, integer), hagen.worker_heartbeat(bigint, bigint, double precision),
	hagen.worker_complete(bigint, bigint, jsonb), hagen.worker_release(bigint, bigint), hagen.worker_next_due()
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hagen.worker_claim(text, integer), hagen.worker_heartbeat(bigint, bigint, double precision),
	hagen.worker_complete(bigint, bigint, jsonb), hagen.worker_release(bigint, bigint), hagen.worker_next_due()
	TO hagen_worker;
