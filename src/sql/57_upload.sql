-- hagenkit install script, part 57: storing a work file in the bucket,
-- with one streamed PUT or, from hagen.s3_multipart_threshold on, a
-- multipart upload.
--
-- The steps belong to the job whose file it is (a clip or a transition);
-- its state names the file, its size and the key ("file", "bytes", "key",
-- optionally "content_type"):
--   store            one PUT of the whole file
--   upload_create    POST ?uploads                      -> upload_id, the plan
--   upload_parts     waits while its parts are sent     -> an ETag per part
--   upload_complete  POST ?uploadId= with the parts' ETags
--   upload_check     HEAD, when a completion's answer was lost
-- Each part is a job of its own (kind upload_part, parent_id the job above):
-- parts travel in parallel through the dispatcher like any other effect,
-- are retried one by one, and a part whose answer was recorded is never
-- sent again, whatever restarts.  The parent's state keeps the upload id
-- and every part's ETag.  A parent that fails or is canceled aborts the
-- upload (a provider cancel job of provider "s3").

CREATE FUNCTION hagen._multipart_threshold() RETURNS bigint
	LANGUAGE sql STABLE
	RETURN pg_size_bytes(hagen._setting('hagen.s3_multipart_threshold', '64MB'));

-- How often a parent waiting for its parts looks at them on its own (its
-- parts wake it when they end; this only covers a wake-up that was lost).
CREATE FUNCTION hagen._upload_watchdog_ms() RETURNS integer
	LANGUAGE sql IMMUTABLE RETURN 30000;

-- The parts of a multipart upload of size bytes: equal parts of
-- hagen.s3_part_size (or part_size), the last one no larger; parts are at
-- least 5 MiB and at most 5 GiB - 5 MiB (R2's limit), at most 10,000 of them,
-- so a file that would need more gets larger parts (in whole MiB).  The
-- largest object is 5 TiB - 5 GiB (R2's limit).
CREATE FUNCTION hagen._multipart_plan(size bigint, part_size bigint DEFAULT NULL,
									  OUT part_bytes bigint, OUT part_count integer,
									  OUT last_part_bytes bigint)
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	mib constant bigint := 1048576;
	min_part constant bigint := 5 * 1048576;
	max_part constant bigint := 5 * 1073741824::bigint - 5 * 1048576;
	max_parts constant integer := 10000;
	max_object constant bigint := 5 * 1099511627776::bigint - 5 * 1073741824::bigint;
BEGIN
	IF size IS NULL OR size < 1 THEN
		RAISE EXCEPTION 'invalid upload size %', coalesce(size::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A multipart upload needs the size of the file in bytes, at least 1.';
	END IF;
	IF size > max_object THEN
		RAISE EXCEPTION 'a file of % bytes is too large to store', size
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = format('The largest object is %s bytes (5 TiB - 5 GiB).', max_object);
	END IF;
	part_bytes := least(greatest(coalesce(part_size,
										  pg_size_bytes(hagen._setting('hagen.s3_part_size', '16MB'))),
								 min_part), max_part);
	IF (size + part_bytes - 1) / part_bytes > max_parts THEN
		part_bytes := ((size + max_parts - 1) / max_parts + mib - 1) / mib * mib;
	END IF;
	part_count := ((size + part_bytes - 1) / part_bytes)::integer;
	last_part_bytes := size - (part_count - 1) * part_bytes;
END;
$$;

-- Whether a file of this size is stored with one PUT or a multipart upload.
CREATE FUNCTION hagen._store_step(bytes bigint) RETURNS text
	LANGUAGE sql STABLE
	RETURN CASE WHEN bytes >= hagen._multipart_threshold() THEN 'upload_create' ELSE 'store' END;

-- The query string naming a multipart upload.
CREATE FUNCTION hagen._upload_query(upload_id text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT
	RETURN 'uploadId=' || hagen._uri_encode(upload_id, false);

-- The body of CompleteMultipartUpload: every part's number and ETag, in order.
CREATE FUNCTION hagen._complete_xml(parts jsonb, part_count integer) RETURNS text
	LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
	missing integer;
BEGIN
	SELECT min(n) INTO missing FROM generate_series(1, part_count) n WHERE NOT parts ? n::text;
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'part % of % has no ETag', missing, part_count;
	END IF;
	RETURN xmlelement(name "CompleteMultipartUpload",
					  xmlattributes('http://s3.amazonaws.com/doc/2006-03-01/' AS xmlns),
					  (SELECT xmlagg(xmlelement(name "Part",
												xmlforest(n AS "PartNumber", parts ->> n::text AS "ETag"))
									 ORDER BY n)
					   FROM generate_series(1, part_count) n))::text;
END;
$$;

-- The effect of a storing step of a job.
CREATE FUNCTION hagen._upload_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	url text := hagen._s3_url(j.state ->> 'key');
	ctype text := coalesce(j.state ->> 'content_type', 'video/mp4');
BEGIN
	CASE j.step
	WHEN 'store' THEN
		RETURN hagen._http('PUT', url, 's3', 'media', jsonb_build_object(
			'headers', jsonb_build_object('content-type', ctype), 'body_file', j.state ->> 'file'));
	WHEN 'upload_create' THEN
		RETURN hagen._http('POST', url || '?uploads', 's3', 'request',
			jsonb_build_object('headers', jsonb_build_object('content-type', ctype)));
	WHEN 'upload_parts' THEN
		RETURN hagen._noop('waiting for the parts of a multipart upload');
	WHEN 'upload_complete' THEN
		RETURN hagen._http('POST', url || '?' || hagen._upload_query(j.state ->> 'upload_id'), 's3',
			'media', jsonb_build_object('headers', '{"content-type": "application/xml"}'::jsonb,
				'body_text', hagen._complete_xml(j.state -> 'parts', (j.state ->> 'part_count')::integer)));
	WHEN 'upload_check' THEN
		RETURN hagen._http('HEAD', url, 's3', 'request');
	END CASE;
	RAISE EXCEPTION 'unknown storing step "%"', j.step;
END;
$$;

-- Reads the outcome of a storing step.  Returns the job's next decision, or
-- {"action": "stored"} (with "log" and "state" to keep) once the object is
-- in the bucket: the job's own adapter says what that means for it.
CREATE FUNCTION hagen._upload_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	key text := j.state ->> 'key';
	what text;
	doc xml;
	bad jsonb;
	uid text;
	plan record;
BEGIN
	CASE j.step
	WHEN 'store' THEN
		IF status BETWEEN 200 AND 299 THEN
			RETURN '{"action": "stored"}';
		END IF;
		RETURN hagen._s3_failure(o, format('upload of %s to storage', key));
	WHEN 'upload_create' THEN
		what := format('start of the multipart upload of %s', key);
		IF status BETWEEN 200 AND 299 THEN
			doc := hagen._xml_doc(o ->> 'body_text');
			bad := hagen._s3_unexpected(o, doc, 'InitiateMultipartUploadResult', what);
			IF bad IS NOT NULL THEN
				RETURN bad;
			END IF;
			uid := hagen._xml_value(doc, '/InitiateMultipartUploadResult/UploadId');
			IF coalesce(uid, '') = '' THEN
				RETURN jsonb_build_object('action', 'fail', 'error', what || ' failed: the answer names no UploadId');
			END IF;
			plan := hagen._multipart_plan((j.state ->> 'bytes')::bigint);
			RETURN jsonb_build_object('action', 'advance', 'step', 'upload_parts',
				'schedule_parts', true, 'delay_ms', hagen._upload_watchdog_ms(),
				'log', format('multipart upload of %s started: %s parts of %s bytes', key,
							  plan.part_count, plan.part_bytes),
				'state', jsonb_build_object('upload_id', uid, 'part_bytes', plan.part_bytes,
											'part_count', plan.part_count, 'parts', '{}'::jsonb,
											'next_part', 1));
		END IF;
		RETURN hagen._s3_failure(o, what);
	WHEN 'upload_parts' THEN
		RETURN hagen._upload_parts_check(j);
	WHEN 'upload_complete' THEN
		what := format('completion of the multipart upload of %s', key);
		doc := hagen._xml_doc(o ->> 'body_text');
		IF hagen._xml_value(doc, '/Error/Code') = 'NoSuchUpload' THEN
			-- Completed by an earlier try whose answer was lost, or gone: look.
			RETURN jsonb_build_object('action', 'advance', 'step', 'upload_check',
				'log', 'the multipart upload is no longer known; checking whether the object is stored');
		ELSIF status BETWEEN 200 AND 299 THEN
			-- S3 may answer 200 with an <Error> inside; an answer that is
			-- not XML is retried (a completion already done then meets
			-- NoSuchUpload, and the object is looked at).
			bad := CASE WHEN coalesce(o ->> 'body_text', '') <> '' THEN
				hagen._s3_unexpected(o, doc, 'CompleteMultipartUploadResult', what) END;
			IF bad IS NOT NULL THEN
				RETURN bad;
			END IF;
			RETURN jsonb_build_object('action', 'stored', 'state', '{"upload_done": true}'::jsonb,
				'log', format('multipart upload of %s completed (%s parts)', key, j.state ->> 'part_count'));
		END IF;
		RETURN hagen._s3_failure(o, what);
	WHEN 'upload_check' THEN
		IF status BETWEEN 200 AND 299
		   AND o -> 'headers' ->> 'content-length' = j.state ->> 'bytes' THEN
			RETURN jsonb_build_object('action', 'stored', 'state', '{"upload_done": true}'::jsonb,
				'log', format('%s is stored (%s bytes)', key, j.state ->> 'bytes'));
		ELSIF status BETWEEN 200 AND 299 OR status = 404 THEN
			RETURN jsonb_build_object('action', 'fail', 'error',
				format('the multipart upload of %s was lost before it completed (the bucket answers HTTP %s%s)',
					   key, status, coalesce(' with ' || (o -> 'headers' ->> 'content-length') || ' bytes', '')));
		END IF;
		RETURN hagen._s3_failure(o, format('check of %s in storage', key));
	END CASE;
	RAISE EXCEPTION 'unknown storing step "%"', j.step;
END;
$$;

-- Queues parts of a parent's multipart upload until as many are live as
-- hagen.s3_upload_concurrency allows.  Returns how many were queued.
CREATE FUNCTION hagen._upload_schedule(parent bigint) RETURNS integer
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.job;
	live integer;
	n integer := 0;
	nxt integer;
	part_count integer;
	part_bytes bigint;
	size bigint;
	allowed integer := hagen._setting('hagen.s3_upload_concurrency', '8')::integer;
BEGIN
	SELECT * INTO p FROM hagen.job WHERE id = parent FOR UPDATE;
	IF NOT FOUND OR p.step <> 'upload_parts' OR p.status NOT IN ('queued', 'running') THEN
		RETURN 0;
	END IF;
	SELECT count(*) INTO live FROM hagen.job q
	WHERE q.parent_id = p.id AND q.kind = 'upload_part' AND q.status IN ('queued', 'running');
	nxt := coalesce((p.state ->> 'next_part')::integer, 1);
	part_count := (p.state ->> 'part_count')::integer;
	part_bytes := (p.state ->> 'part_bytes')::bigint;
	size := (p.state ->> 'bytes')::bigint;
	WHILE live < allowed AND nxt <= part_count LOOP
		IF NOT p.state -> 'parts' ? nxt::text THEN
			INSERT INTO hagen.job (project_id, clip_id, kind, lane, provider, step, state,
								   deadline_at, parent_id)
			VALUES (p.project_id, p.clip_id, 'upload_part', 'http', 's3', 'part',
					jsonb_build_object('part', nxt, 'offset', (nxt - 1) * part_bytes,
									   'length', least(part_bytes, size - (nxt - 1) * part_bytes),
									   'upload_id', p.state ->> 'upload_id',
									   'key', p.state ->> 'key', 'file', p.state ->> 'file'),
					p.deadline_at, p.id)
			ON CONFLICT DO NOTHING;
			live := live + 1;
			n := n + 1;
		END IF;
		nxt := nxt + 1;
	END LOOP;
	UPDATE hagen.job SET state = state || jsonb_build_object('next_part', nxt) WHERE id = p.id;
	RETURN n;
END;
$$;

-- A parent waiting for its parts, looked at: all parts stored -> complete;
-- a part failed -> the upload fails; otherwise wait on (queuing parts that
-- should be running).
CREATE FUNCTION hagen._upload_parts_check(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	part_count integer := (j.state ->> 'part_count')::integer;
	bad hagen.job;
BEGIN
	IF (SELECT count(*) FROM jsonb_object_keys(j.state -> 'parts')) >= part_count THEN
		RETURN jsonb_build_object('action', 'advance', 'step', 'upload_complete');
	END IF;
	SELECT * INTO bad FROM hagen.job q
	WHERE q.parent_id = j.id AND q.kind = 'upload_part' AND q.status IN ('failed', 'canceled')
	  AND q.state ->> 'upload_id' = j.state ->> 'upload_id'
	ORDER BY q.id LIMIT 1;
	IF FOUND THEN
		RETURN jsonb_build_object('action', 'fail', 'error',
			format('part %s of %s of the multipart upload of %s %s: %s', bad.state ->> 'part', part_count,
				   j.state ->> 'key', bad.status, coalesce(bad.last_error, 'no reason given')));
	END IF;
	RETURN jsonb_build_object('action', 'advance', 'step', 'upload_parts', 'schedule_parts', true,
							  'delay_ms', hagen._upload_watchdog_ms());
END;
$$;

-- The effect of a part: its byte range of the file, streamed.
CREATE FUNCTION hagen._upload_part_effect(j hagen.job) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN hagen._http('PUT', hagen._s3_url(j.state ->> 'key') || '?partNumber=' || (j.state ->> 'part')
			|| '&' || hagen._upload_query(j.state ->> 'upload_id'), 's3', 'part',
		jsonb_build_object('body_file', j.state ->> 'file', 'body_offset', j.state -> 'offset',
						   'body_length', j.state -> 'length'));

-- Reads the answer to a part: its ETag is what completion needs.  R2 is
-- known to refuse a part's signature now and then under load: a 403 is
-- tried once more.
CREATE FUNCTION hagen._upload_part_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	etag text := o -> 'headers' ->> 'etag';
	what text := format('upload of part %s of %s', j.state ->> 'part', j.state ->> 'key');
BEGIN
	IF status BETWEEN 200 AND 299 THEN
		IF coalesce(etag, '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error', what || ' failed: the answer has no ETag');
		END IF;
		RETURN jsonb_build_object('action', 'succeed', 'state', jsonb_build_object('etag', etag));
	ELSIF status = 403 AND j.attempts < 2 THEN
		RETURN jsonb_build_object('action', 'retry', 'max_attempts', 2,
			'error', (hagen._s3_failure(o, what)) ->> 'error');
	END IF;
	RETURN hagen._s3_failure(o, what);
END;
$$;

-- A part ended: a stored part's ETag goes into its parent's state (with
-- the next part queued, or the parent woken to complete); a failed part
-- wakes the parent, which fails the upload.
CREATE FUNCTION hagen._upload_part_finished(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	p hagen.job;
BEGIN
	SELECT * INTO p FROM hagen.job WHERE id = j.parent_id FOR UPDATE;
	IF NOT FOUND OR p.step <> 'upload_parts' OR p.status NOT IN ('queued', 'running')
	   OR p.state ->> 'upload_id' IS DISTINCT FROM j.state ->> 'upload_id' THEN
		RETURN;
	END IF;
	IF j.status = 'succeeded' THEN
		p.state := jsonb_set(p.state, ARRAY['parts', j.state ->> 'part'], j.state -> 'etag');
		UPDATE hagen.job SET state = p.state WHERE id = p.id;
		IF (SELECT count(*) FROM jsonb_object_keys(p.state -> 'parts'))
		   < (p.state ->> 'part_count')::integer THEN
			PERFORM hagen._upload_schedule(p.id);
			-- (A clip's or transition's progress moves with its parts by
			-- the trigger job_progress; a compile's here.)
			IF p.kind = 'compile' THEN
				PERFORM hagen._compile_progress(p, 'store',
					(SELECT count(*) FROM jsonb_object_keys(p.state -> 'parts'))
					/ greatest((p.state ->> 'part_count')::numeric, 1));
			END IF;
			RETURN;
		END IF;
	END IF;
	UPDATE hagen.job SET run_at = now() WHERE id = p.id AND status = 'queued';
END;
$$;

-- A job with a multipart upload under way ended without completing it:
-- its parts stop and the upload is aborted, so storage keeps no parts.
CREATE FUNCTION hagen._upload_abandon(j hagen.job) RETURNS void
	LANGUAGE plpgsql AS $$
DECLARE
	q hagen.job;
BEGIN
	FOR q IN SELECT * FROM hagen.job x WHERE x.parent_id = j.id AND x.kind = 'upload_part'
			 AND x.status = 'queued' ORDER BY x.id FOR UPDATE
	LOOP
		PERFORM hagen._cancel_job(q);
	END LOOP;
	UPDATE hagen.job x SET cancel_requested = true
	WHERE x.parent_id = j.id AND x.kind = 'upload_part' AND x.status = 'running';
	PERFORM hagen._enqueue(j.project_id, j.clip_id, 'cancel', 's3', 'cancel',
		jsonb_build_object('upload_id', j.state ->> 'upload_id', 'key', j.state ->> 'key',
						   'for_job', j.id));
END;
$$;

-- The abort of a multipart upload (a cancel job of provider "s3").
CREATE FUNCTION hagen._upload_abort_effect(key text, upload_id text) RETURNS jsonb
	LANGUAGE sql STABLE
	RETURN hagen._http('DELETE', hagen._s3_url(key) || '?' || hagen._upload_query(upload_id), 's3');
