-- Storage through the engine, with no network: the multipart planner and
-- its limits, S3's XML answers and errors, multipart uploads step by step
-- (parts in parallel, retries, failures, abort, cancel, resume after a
-- crash), and the purge of a project's objects, against a fake S3 whose
-- bucket is a table.
\pset null '(null)'
SELECT count(*) AS leftover FROM hagen.job WHERE status IN ('queued', 'running');

-- 1. The multipart planner: equal parts of hagen.s3_part_size (16 MiB),
-- only the last smaller; at least 5 MiB; at most 10,000 parts.
SELECT size, p.* FROM (VALUES (1::bigint), (16777216), (67108864), (67108865),
						(104857600), (167772160000), (167772160001), (5497558138880 - 5368709120)) s(size),
	LATERAL hagen._multipart_plan(size) p;
-- A part size below 5 MiB (or above 5 GiB - 5 MiB) is brought into range.
SELECT p.* FROM hagen._multipart_plan(20000000, 1048576) p;
SELECT p.* FROM hagen._multipart_plan(6000000000, 6000000000) p;
-- The invariants, over many sizes and part sizes.
SELECT count(*) AS plans,
	   count(*) FILTER (WHERE part_count > 10000) AS too_many_parts,
	   count(*) FILTER (WHERE part_count > 1 AND part_bytes < 5242880) AS parts_too_small,
	   count(*) FILTER (WHERE part_bytes > 5363466240) AS parts_too_large,
	   count(*) FILTER (WHERE last_part_bytes > part_bytes OR last_part_bytes < 1) AS bad_last_part,
	   count(*) FILTER (WHERE (part_count - 1) * part_bytes + last_part_bytes <> size) AS sizes_not_covered
FROM (SELECT size, ps, p.* FROM generate_series(1, 400) i,
		  LATERAL (SELECT (1.09 ^ (i / 4.0))::bigint * 1000 + i AS size) s,
		  LATERAL (VALUES (NULL::bigint), (5242880), (8388608), (104857600)) ps(ps),
		  LATERAL hagen._multipart_plan(size, ps) p
	  WHERE size <= 5497558138880 - 5368709120) x;
SELECT t.err('SELECT hagen._multipart_plan(0)');
SELECT t.err('SELECT hagen._multipart_plan(NULL)');
SELECT t.err('SELECT hagen._multipart_plan(5497558138880)');
-- Which files go multipart (hagen.s3_multipart_threshold, 64 MiB).
SELECT current_setting('hagen.s3_multipart_threshold') AS threshold,
	   current_setting('hagen.s3_part_size') AS part_size,
	   current_setting('hagen.s3_upload_concurrency') AS concurrency;
SELECT b, hagen._store_step(b) FROM (VALUES (67108863::bigint), (67108864)) v(b);

-- 2. S3's XML, read and written by the server's libxml.
-- Keys with markup, quotes, entities and non-ASCII written into the body of
-- a DeleteObjects (namespace and all) and read back: the same keys.
CREATE TABLE t.hostile_keys (n serial, k text);
INSERT INTO t.hostile_keys (k) VALUES ('a & b.mp4'), ('<c>.mp4'), ('"quoted" ''single''.mp4'),
	('ünï/日本語/🎬.mp4'), ('   '), ('x]]>y'), ('&amp;.mp4'), ('&#233;.mp4'), (E'tab\there'), ('a > b'),
	('</Key><Key>injected'), ('');
SELECT hagen._delete_xml(jsonb_agg(k ORDER BY n)) AS body FROM t.hostile_keys \gset
SELECT :'body' AS delete_body;
SELECT xml_is_well_formed_document(:'body') AS well_formed,
	   (xpath('namespace-uri(/*)', :'body'::xml))[1] AS namespace,
	   hagen._xml_values(hagen._xml_doc(:'body'), '/Delete/Object/Key')
		   = (SELECT array_agg(k ORDER BY n) FROM t.hostile_keys) AS keys_round_trip,
	   hagen._xml_value(hagen._xml_doc(:'body'), '/Delete/Quiet') AS quiet;
-- ETags (quoted by S3) in a CompleteMultipartUpload, in part order.
SELECT hagen._complete_xml('{"2": "\"b&<2>\"", "1": "\"a1\"", "3": "\"c3\""}', 3) AS body \gset
SELECT :'body' AS complete_body;
SELECT hagen._xml_values(hagen._xml_doc(:'body'), '/CompleteMultipartUpload/Part/PartNumber') AS part_numbers,
	   hagen._xml_values(hagen._xml_doc(:'body'), '/CompleteMultipartUpload/Part/ETag') AS etags;
SELECT t.err($$SELECT hagen._complete_xml('{"1": "a", "3": "c"}', 3)$$);
-- Reading: elements by local name, with S3's namespace or without it;
-- references, CDATA and entities decoded by the parser, once.
SELECT v.answer, hagen._xml_values(hagen._xml_doc(v.body), '/ListBucketResult/Contents/Key') AS keys,
	   hagen._xml_value(hagen._xml_doc(v.body), '/ListBucketResult/IsTruncated') AS truncated
FROM (VALUES
	('namespaced', '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated><Contents><Key>a&amp;b</Key></Contents><Contents><Key>c&lt;d&gt;</Key></Contents></ListBucketResult>'),
	('no namespace', '<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a&amp;b</Key></Contents><Contents><Key>c&lt;d&gt;</Key></Contents></ListBucketResult>'),
	('prefixed', '<s3:ListBucketResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Contents><s3:Key>p</s3:Key></s3:Contents></s3:ListBucketResult>'),
	('references', '<ListBucketResult><Contents><Key>&#233;&#x2713; &amp;lt; &quot;&apos;</Key></Contents><Contents><Key><![CDATA[<raw & "cdata">]]></Key></Contents><Contents><Key></Key></Contents></ListBucketResult>'),
	('other keys', '<ListBucketResult><Prefix>not/a/Key</Prefix><Contents><Key>k</Key><Owner><Key>nested</Key></Owner></Contents></ListBucketResult>'),
	('external entity', '<?xml version="1.0"?><!DOCTYPE ListBucketResult [<!ENTITY x SYSTEM "file:///etc/passwd">]><ListBucketResult><Contents><Key>[&x;]</Key></Contents></ListBucketResult>')) v(answer, body);
-- The text form looks for a name anywhere; what is not XML has no values.
SELECT hagen._xml_values('<R><Key>a&amp;b</Key><Key>c</Key><Other>x</Other><Key></Key></R>', 'Key') AS keys,
	   hagen._xml_value('<R/>', 'Key') AS none, hagen._xml_values('<R><Key>cut', 'Key') AS malformed;
-- What is not an XML document, and what it is called in errors.
SELECT v.body, hagen._xml_doc(v.body) IS NULL AS not_a_document, hagen._xml_not_doc(v.body) AS described
FROM (VALUES ('<ListBucketResult><Contents><Key>cut'), ('<html><body>502 Bad Gateway</body></html>'),
			 (E'{"error":\n"not xml"}'), ('<a/><b/>'), ('a & b'), (repeat('<x>', 40)), (''), (NULL),
			 ('<ok/>')) v(body);
SELECT t.err($$SELECT hagen._xml_xpath('/a/b[1]')$$);
-- S3's error answers, namespaced or not; a repeated element is no error.
SELECT hagen._s3_error(jsonb_build_object('body_text', v.body)) AS error
FROM (VALUES ('<Error><Code>NoSuchKey</Code><Message>The key &lt;k&gt; does not exist</Message></Error>'),
			 ('<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Code>AccessDenied</Code></Error>'),
			 ('<Error><Code>A</Code><Code>B</Code><Message>first</Message><Message>second</Message></Error>'),
			 ('<ListBucketResult><Code>NotAnError</Code></ListBucketResult>'), ('<Error><Code>cut')) v(body);
-- A 2xx answer that is not the document expected: an <Error> inside is an
-- S3 error (retried or not by its code); anything else is retried, saying
-- what came instead.
SELECT v.o ->> 'body_text' AS body, d ->> 'action' AS action, d ->> 'error' AS error
FROM (VALUES
	('{"status": 200, "body_text": "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>"}'::jsonb),
	('{"status": 200, "body_text": "<ListBucketResult/>"}'),
	('{"status": 200, "body_text": "<ListBucketResult><Contents><Key>cut"}'),
	('{"status": 200, "body_text": "<html><body>Welcome to nginx!</body></html>"}'),
	('{"status": 200}'),
	('{"status": 200, "body_text": "<DeleteResult/>"}'),
	('{"status": 200, "body_text": "<Error><Code>InternalError</Code><Message>Try again.</Message></Error>"}'),
	('{"status": 200, "body_text": "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"}')) v(o),
	LATERAL hagen._s3_unexpected(v.o, hagen._xml_doc(v.o ->> 'body_text'), 'ListBucketResult', 'listing of p/') d;
-- Errors become readable; what is worth retrying is retried.
SELECT o ->> 'status' AS status, d ->> 'action' AS action, d ->> 'retry_after_ms' AS retry_after_ms,
	   d ->> 'error' AS error
FROM (VALUES
	('{"status": 503, "body_text": "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"}'::jsonb),
	('{"status": 503, "headers": {"retry-after": "7"}, "body_text": "<Error><Code>ServiceUnavailable</Code></Error>"}'),
	('{"status": 500, "body_text": "<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>"}'),
	('{"status": 400, "body_text": "<Error><Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from or written to within the timeout period.</Message></Error>"}'),
	('{"status": 429, "body_text": "rate limited"}'),
	('{"status": 0, "error": "http://s3.test:9000/videos/k: Couldn''t connect to server", "phase": "connect"}'),
	('{"status": 403, "body_text": "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided. Check &apos;key&apos; &amp; signing method.</Message></Error>"}'),
	('{"status": 404, "body_text": "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>videos</BucketName></Error>"}'),
	('{"status": 400, "body_text": "<Error><Code>EntityTooSmall</Code><Message>Your proposed upload is smaller than the minimum allowed object size.</Message></Error>"}'),
	('{"status": 404}')) v(o),
	LATERAL hagen._s3_failure(o, 'upload of k to storage') d;
SELECT hagen._error_text('{"status": 403, "body_text": "<Error><Code>AccessDenied</Code><Message>a &lt;b&gt;</Message></Error>"}') AS error_text;

-- 3. A fake S3: a bucket in a table, answers built the way S3 builds them.
CREATE TABLE t.bucket (key text PRIMARY KEY);
CREATE TABLE t.locked (key text PRIMARY KEY);	-- keys DeleteObjects refuses
-- Answers to give instead: (step, part) -> outcome, n times.
CREATE TABLE t.s3_script (id serial, step text, part integer, outcome jsonb, times integer DEFAULT 1);
-- What the fake was sent: (kind, part, method).
CREATE TABLE t.s3_log (id serial, kind text, step text, part integer, method text);

CREATE FUNCTION t.urldecode(s text) RETURNS text LANGUAGE sql IMMUTABLE
	RETURN (SELECT convert_from(string_agg(CASE WHEN m[1] IS NOT NULL THEN decode(substr(m[1], 2), 'hex')
												ELSE convert_to(m[2], 'UTF8') END, ''::bytea ORDER BY n), 'UTF8')
			FROM regexp_matches(s, '(%[0-9A-Fa-f]{2})|([^%]+)', 'g') WITH ORDINALITY x(m, n));
CREATE FUNCTION t.param(url text, name text) RETURNS text LANGUAGE sql IMMUTABLE
	RETURN t.urldecode(substring(url FROM '[?&]' || name || '=([^&]*)'));
-- Continuation tokens are opaque base64, here with "+/=" for sure.
CREATE FUNCTION t.token(key text) RETURNS text LANGUAGE sql IMMUTABLE
	RETURN '+/=' || translate(encode(convert_to(key, 'UTF8'), 'base64'), E'\n', '');

CREATE FUNCTION t.s3(j hagen.job, eff jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	url text := eff ->> 'url';
	prefix text;
	after text;
	keys text[];
	more boolean;
	body text;
BEGIN
	IF eff ->> 'type' = 'noop' THEN
		RETURN '{"type": "noop"}';
	ELSIF eff ->> 'type' = 'remove' THEN
		RETURN '{"status": "ok", "removed": true}';
	ELSIF j.kind = 'fetch' THEN
		RETURN jsonb_build_object('status', 200, 'file', eff ->> 'save_to', 'bytes', 1000, 'existing', true);
	ELSIF j.kind = 'upload_part' THEN
		RETURN jsonb_build_object('status', 200,
			'headers', jsonb_build_object('etag', format('"etag-%s"', j.state ->> 'part')));
	ELSIF j.kind = 'cancel' THEN
		RETURN '{"status": 204}';
	END IF;
	CASE j.step
	WHEN 'download' THEN
		RETURN jsonb_build_object('status', 200, 'file', eff ->> 'save_to', 'bytes', (j.state ->> 'test_bytes')::bigint);
	WHEN 'store' THEN
		RETURN '{"status": 200, "headers": {"etag": "\"whole\""}}';
	WHEN 'upload_create' THEN
		RETURN jsonb_build_object('status', 200, 'body_text',
			'<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>videos</Bucket><Key>k</Key><UploadId>Up+l0ad/ID==&amp;1</UploadId></InitiateMultipartUploadResult>');
	WHEN 'upload_complete' THEN
		RETURN jsonb_build_object('status', 200, 'body_text',
			'<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult><Location>x</Location><Bucket>videos</Bucket><Key>k</Key><ETag>"abc-13"</ETag></CompleteMultipartUploadResult>');
	WHEN 'upload_check' THEN
		RETURN jsonb_build_object('status', 200, 'headers', jsonb_build_object('content-length', j.state ->> 'bytes'));
	WHEN 'abort' THEN
		RETURN '{"status": 204}';
	WHEN 'list' THEN
		prefix := t.param(url, 'prefix');
		after := convert_from(decode(substr(t.param(url, 'continuation-token'), 4), 'base64'), 'UTF8');
		SELECT array_agg(key ORDER BY key) INTO keys
		FROM (SELECT key FROM t.bucket WHERE left(key, length(prefix)) = prefix
			  AND (after IS NULL OR key > after) ORDER BY key LIMIT 1000) x;
		more := EXISTS (SELECT 1 FROM t.bucket WHERE left(key, length(prefix)) = prefix
						AND key > keys[cardinality(keys)]);
		RETURN jsonb_build_object('status', 200, 'body_text', '<?xml version="1.0" encoding="UTF-8"?>'
			|| xmlelement(name "ListBucketResult", xmlattributes('http://s3.amazonaws.com/doc/2006-03-01/' AS xmlns),
				   xmlforest('videos' AS "Name", prefix AS "Prefix", coalesce(cardinality(keys), 0) AS "KeyCount",
							 1000 AS "MaxKeys", more AS "IsTruncated"),
				   (SELECT xmlagg(xmlelement(name "Contents", xmlforest(k AS "Key", 1 AS "Size",
																	 'STANDARD' AS "StorageClass")) ORDER BY n)
					FROM unnest(keys) WITH ORDINALITY AS x(k, n)),
				   CASE WHEN more THEN xmlelement(name "NextContinuationToken", t.token(keys[cardinality(keys)])) END)::text);
	WHEN 'delete' THEN
		body := eff ->> 'body_text';
		IF eff -> 'headers' ->> 'content-md5' IS DISTINCT FROM encode(decode(md5(convert_to(body, 'UTF8')), 'hex'), 'base64') THEN
			RETURN '{"status": 400, "body_text": "<Error><Code>BadDigest</Code><Message>The Content-MD5 you specified did not match what we received.</Message></Error>"}';
		END IF;
		keys := hagen._xml_values(body, 'Key');
		DELETE FROM t.bucket WHERE key = ANY (keys) AND key NOT IN (SELECT key FROM t.locked);
		RETURN jsonb_build_object('status', 200, 'body_text', '<?xml version="1.0" encoding="UTF-8"?>'
			|| xmlelement(name "DeleteResult", xmlattributes('http://s3.amazonaws.com/doc/2006-03-01/' AS xmlns),
				   (SELECT xmlagg(xmlelement(name "Error", xmlforest(k AS "Key", 'AccessDenied' AS "Code",
																	  'Access Denied' AS "Message")))
					FROM unnest(keys) k WHERE k IN (SELECT key FROM t.locked)))::text);
	END CASE;
	RAISE EXCEPTION 'the fake S3 has no answer for % step %', j.kind, j.step;
END;
$$;

-- Makes every queued job due, except a multipart upload waiting for its
-- parts (its parts wake it).
-- The compiles that follow the clips stored here, and the removal of work
-- files, are left waiting: these scenarios are about storing one file.
CREATE FUNCTION t.due_s3() RETURNS void LANGUAGE sql AS $$
	UPDATE hagen.job SET run_at = now() - interval '1 second'
	WHERE status = 'queued' AND (step <> 'upload_parts' OR run_at <= now())
	  AND kind NOT IN ('compile', 'fetch', 'cleanup');
	UPDATE hagen.job SET run_at = now() + interval '1 hour'
	WHERE status = 'queued' AND kind IN ('compile', 'fetch', 'cleanup');
$$;

-- One round of the dispatcher against the fake S3.
CREATE FUNCTION t.s3_tick(max_jobs integer DEFAULT 100)
	RETURNS TABLE (kind text, part integer, step text, verdict text, next_step text, status text)
	LANGUAGE plpgsql AS $$
DECLARE
	c record;
	j hagen.job;
	o jsonb;
	s t.s3_script;
	n integer;
BEGIN
	PERFORM t.due_s3();
	FOR c IN SELECT * FROM hagen.claim_jobs('http', max_jobs) LOOP
		SELECT * INTO j FROM hagen.job WHERE id = c.job_id;
		n := (j.state ->> 'part')::integer;
		part := n;
		SELECT * INTO s FROM t.s3_script x
		WHERE x.step = j.step AND x.part IS NOT DISTINCT FROM n AND x.times > 0 ORDER BY x.id LIMIT 1;
		IF FOUND THEN
			UPDATE t.s3_script x SET times = x.times - 1 WHERE x.id = s.id;
			o := s.outcome;
		ELSE
			o := t.s3(j, c.effect);
		END IF;
		INSERT INTO t.s3_log (kind, step, part, method) VALUES (j.kind, j.step, n, c.effect ->> 'method');
		kind := j.kind;
		step := j.step;
		verdict := hagen.complete_job(c.job_id, c.token, o);
		SELECT q.step, q.status INTO next_step, status FROM hagen.job q WHERE q.id = c.job_id;
		RETURN NEXT;
	END LOOP;
END;
$$;

-- Rounds until nothing is due; how many effects were answered.
CREATE FUNCTION t.s3_run(max_rounds integer DEFAULT 50) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
	total integer := 0;
	n integer;
BEGIN
	FOR i IN 1 .. max_rounds LOOP
		SELECT count(*) INTO n FROM t.s3_tick();
		EXIT WHEN n = 0;
		total := total + n;
	END LOOP;
	RETURN total;
END;
$$;

-- A started project of one clip whose job waits at its download step,
-- the generated video being test_bytes long.
CREATE FUNCTION t.clip_at_download(ws text, test_bytes bigint) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
	p uuid := hagen.create_project(ws);
BEGIN
	PERFORM hagen.add_clip(p, 'https://img.example.com/1.jpg');
	PERFORM hagen.start_video(p);
	UPDATE hagen.job SET step = 'download',
		state = state || jsonb_build_object('video_url', 'https://v3.fal.media/files/x/output.mp4',
											'test_bytes', test_bytes)
	WHERE project_id = p;
	RETURN p;
END;
$$;

-- The upload job of a project and its parts, as a table.
CREATE FUNCTION t.parts(p uuid) RETURNS TABLE (part integer, status text, attempts integer, etag text)
	LANGUAGE sql AS $$
	SELECT (q.state ->> 'part')::integer, q.status, q.total_attempts, q.state ->> 'etag'
	FROM hagen.job q JOIN hagen.job u ON u.id = q.parent_id
	WHERE u.project_id = p AND q.kind = 'upload_part' ORDER BY 1;
$$;

-- 4. A small file: one PUT, as before.
SELECT t.clip_at_download('ws-small', 67108863) AS p \gset
SELECT * FROM t.s3_tick();
SELECT c.effect ->> 'method' AS method, t.mask(c.effect ->> 'url') AS url, c.effect -> 'headers' AS headers,
	   t.mask(c.effect ->> 'body_file') AS body_file, c.effect -> 'body_offset' AS body_offset
FROM hagen.claim_jobs('http', 1) c;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT * FROM t.s3_tick();
SELECT status, t.mask(clip_url) AS clip_url FROM hagen.video_clip WHERE project_id = :'p';

-- 5. A 200 MiB file: a multipart upload of 13 parts, 8 at a time.
SELECT t.clip_at_download('ws-multi', 209715200) AS p \gset
SELECT * FROM t.s3_tick();
SELECT c.effect ->> 'method' AS method, t.mask(c.effect ->> 'url') AS url, c.effect -> 'headers' AS headers
FROM hagen.claim_jobs('http', 1) c;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT * FROM t.s3_tick();
-- The upload id (with "+", "/", "=", "&") and the plan are in the job's state.
SELECT step, status, state ->> 'upload_id' AS upload_id, state -> 'part_bytes' AS part_bytes,
	   state -> 'part_count' AS part_count, state -> 'parts' AS parts, state -> 'next_part' AS next_part
FROM hagen.job WHERE project_id = :'p' AND kind = 'clip';
-- Eight parts are queued; each streams its byte range, signed with the upload id encoded.
SELECT (j.state ->> 'part')::integer AS part, e.effect ->> 'method' AS method,
	   t.mask(e.effect ->> 'url') AS url, e.effect -> 'body_offset' AS body_offset,
	   e.effect -> 'body_length' AS body_length, t.mask(e.effect ->> 'body_file') AS body_file,
	   e.effect -> 'timeout_ms' AS timeout_ms
FROM hagen.job j, LATERAL (SELECT hagen._effect(j) AS effect) e
WHERE j.project_id = :'p' AND j.kind = 'upload_part' AND j.status = 'queued' ORDER BY 1;
-- Part 3 meets SlowDown once and is retried; the others are stored, and
-- as each ends the next part is queued.
INSERT INTO t.s3_script (step, part, outcome) VALUES
	('part', 3, '{"status": 503, "body_text": "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"}');
SELECT * FROM t.s3_tick();
SELECT * FROM t.parts(:'p');
SELECT state -> 'parts' AS parts, state -> 'next_part' AS next_part,
	   (SELECT progress FROM hagen.video_project WHERE id = :'p') AS progress
FROM hagen.job WHERE project_id = :'p' AND kind = 'clip';
SELECT * FROM t.s3_tick();
SELECT * FROM t.s3_tick();
-- Every part stored: the job was woken to complete the upload.
SELECT step, status, run_at <= now() AS woken FROM hagen.job WHERE project_id = :'p' AND kind = 'clip';
SELECT e.effect ->> 'method' AS method, t.mask(e.effect ->> 'url') AS url, e.effect -> 'headers' AS headers,
	   hagen._xml_values(e.effect ->> 'body_text', 'PartNumber') AS part_numbers,
	   hagen._xml_values(e.effect ->> 'body_text', 'ETag') AS etags,
	   left(e.effect ->> 'body_text', 160) AS body
FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
-- S3 may answer 200 with an error inside: retried.
INSERT INTO t.s3_script (step, outcome) VALUES
	('upload_complete', '{"status": 200, "body_text": "<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>"}');
SELECT * FROM t.s3_tick();
SELECT * FROM t.s3_tick();
SELECT status, t.mask(clip_url) AS clip_url FROM hagen.video_clip WHERE project_id = :'p';
SELECT level, regexp_replace(t.mask(message), '\d+ ms', 'N ms') AS message FROM hagen.job_log
WHERE job_id = (SELECT id FROM hagen.job WHERE project_id = :'p' AND kind = 'clip') ORDER BY id;
-- Each part was sent once, but part 3 twice; no abort.
SELECT step, part, count(*) FROM t.s3_log WHERE kind IN ('upload_part', 'cancel')
GROUP BY 1, 2 HAVING count(*) > 1 OR step = 'cancel' ORDER BY 1, 2;
SELECT count(*) AS upload_jobs_live FROM hagen.job
WHERE project_id = :'p' AND kind IN ('clip', 'upload_part') AND status IN ('queued', 'running');

-- 6. A crash in the middle: the parts whose answer was recorded are never
-- sent again; those in flight are.
TRUNCATE t.s3_log;
SELECT t.clip_at_download('ws-crash', 104857600) AS p \gset
SELECT count(*) AS effects FROM t.s3_tick();
SELECT count(*) AS effects FROM t.s3_tick();
-- Seven parts claimed; the answers of parts 1 to 4 come back, then the worker dies.
CREATE TEMP TABLE claimed AS SELECT * FROM hagen.claim_jobs('http', 100);
SELECT hagen.complete_job(c.job_id, c.token, t.s3(j, c.effect))
FROM claimed c JOIN hagen.job j ON j.id = c.job_id WHERE (j.state ->> 'part')::integer <= 4 ORDER BY 1;
SELECT hagen.recover_jobs('http') AS recovered;
SELECT * FROM t.parts(:'p');
SELECT state -> 'parts' AS recorded FROM hagen.job WHERE project_id = :'p' AND kind = 'clip';
SELECT t.s3_run() > 0 AS ran;
SELECT * FROM t.parts(:'p');
SELECT status, t.mask(clip_url) AS clip_url FROM hagen.video_clip WHERE project_id = :'p';
-- The late answer of the worker that died is stale.
SELECT hagen.complete_job(c.job_id, c.token, '{"status": 200, "headers": {"etag": "\"late\""}}')
FROM claimed c JOIN hagen.job j ON j.id = c.job_id WHERE (j.state ->> 'part')::integer = 5;
DROP TABLE claimed;

-- 7. A part refused for good: the upload fails, the other parts stop and
-- the upload is aborted.  A 403 is tried twice (R2 refuses a part's
-- signature now and then); a NoSuchUpload is final at once.
SELECT t.clip_at_download('ws-partfail', 104857600) AS p \gset
INSERT INTO t.s3_script (step, part, outcome, times) VALUES
	('part', 2, '{"status": 403, "body_text": "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"}', 2),
	('part', 5, '{"status": 404, "body_text": "<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>"}', 1);
SELECT * FROM t.s3_tick();
SELECT * FROM t.s3_tick();
SELECT * FROM t.s3_tick();
SELECT * FROM t.parts(:'p');
SELECT * FROM t.s3_tick();
SELECT * FROM t.parts(:'p');
SELECT j.kind, j.provider, j.status, e.effect ->> 'method' AS method, t.mask(e.effect ->> 'url') AS url
FROM hagen.claim_jobs('http', 100) e JOIN hagen.job j ON j.id = e.job_id ORDER BY j.id;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT * FROM t.s3_tick();
SELECT * FROM t.s3_tick();
SELECT c.status, t.mask(c.error_message) AS error FROM hagen.video_clip c WHERE c.project_id = :'p';
SELECT kind, status, t.mask(last_error) AS last_error FROM hagen.job
WHERE project_id = :'p' AND kind IN ('clip', 'cancel') ORDER BY id;
SELECT level, t.mask(message) AS message FROM hagen.job_log
WHERE job_id = (SELECT id FROM hagen.job WHERE project_id = :'p' AND kind = 'cancel');

-- 8. Canceled mid-upload: queued parts stop at once, running ones when
-- they return, and the upload is aborted.
SELECT t.clip_at_download('ws-cancel', 104857600) AS p \gset
SELECT count(*) AS effects FROM t.s3_tick();
SELECT count(*) AS effects FROM t.s3_tick();
SELECT count(*) AS running FROM hagen.claim_jobs('http', 3);
SELECT (hagen.cancel_video(:'p')) ->> 'status' AS status;
SELECT kind, (state ->> 'part')::integer AS part, status, cancel_requested FROM hagen.job
WHERE project_id = :'p' ORDER BY id;
SELECT j.kind, j.provider, t.mask(e.effect ->> 'url') AS url
FROM hagen.claim_jobs('http', 100) e JOIN hagen.job j ON j.id = e.job_id WHERE j.kind = 'cancel';
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running' AND kind = 'cancel';
-- The parts in flight come back: canceled, their answers kept out.
SELECT hagen.complete_job(j.id, j.lease_token, '{"status": 200, "headers": {"etag": "\"x\""}}') AS verdict, j.state ->> 'part' AS part
FROM hagen.job j WHERE j.project_id = :'p' AND j.status = 'running' ORDER BY j.id;
SELECT * FROM t.s3_tick();
SELECT kind, count(*) FILTER (WHERE status = 'canceled') AS canceled, count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
	   count(*) AS jobs
FROM hagen.job WHERE project_id = :'p' GROUP BY kind ORDER BY kind;
SELECT state -> 'parts' AS parts FROM hagen.job WHERE project_id = :'p' AND kind = 'clip';

-- 9. The answer to a completion was lost: the next try finds the upload
-- gone, so the object is looked at (HEAD): there, with the right size.
SELECT t.clip_at_download('ws-lost', 104857600) AS p \gset
INSERT INTO t.s3_script (step, outcome) VALUES
	('upload_complete', '{"status": 0, "error": "http://s3.test:9000/videos/k: Operation timed out", "phase": "transfer"}'),
	('upload_complete', '{"status": 404, "body_text": "<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>"}');
SELECT t.s3_run() > 0 AS ran;
SELECT step, status FROM hagen.job WHERE project_id = :'p' AND kind = 'clip';
SELECT level, regexp_replace(t.mask(message), '\d+ ms', 'N ms') AS message FROM hagen.job_log
WHERE job_id = (SELECT id FROM hagen.job WHERE project_id = :'p' AND kind = 'clip')
  AND (level <> 'info' OR message LIKE '%upload%' OR message LIKE '%stored%') ORDER BY id;
-- A HEAD that finds another size fails the clip.
SELECT t.clip_at_download('ws-lost-2', 104857600) AS p \gset
INSERT INTO t.s3_script (step, outcome) VALUES
	('upload_complete', '{"status": 404, "body_text": "<Error><Code>NoSuchUpload</Code></Error>"}'),
	('upload_check', '{"status": 404}');
SELECT t.s3_run() > 0 AS ran;
SELECT status, t.mask(error_message) AS error FROM hagen.video_clip WHERE project_id = :'p';

-- 10. A parent that lost a wake-up looks at its parts on its own.
SELECT t.clip_at_download('ws-watchdog', 67108864) AS p \gset
SELECT count(*) AS effects FROM t.s3_tick();
SELECT count(*) AS effects FROM t.s3_tick();
SELECT count(*) AS effects FROM t.s3_tick();
UPDATE hagen.job SET run_at = now() + interval '1 hour' WHERE project_id = :'p' AND kind = 'clip';
SELECT * FROM t.s3_tick();
SELECT step, run_at > now() + interval '50 minutes' AS still_asleep FROM hagen.job WHERE project_id = :'p' AND kind = 'clip';
UPDATE hagen.job SET run_at = now() - interval '1 second' WHERE project_id = :'p' AND kind = 'clip';
SELECT * FROM t.s3_tick();
SELECT t.s3_run() > 0 AS ran;
SELECT status FROM hagen.video_clip WHERE project_id = :'p';

-- 11. Deleting a project deletes its objects: a purge job that outlives the
-- row lists the prefix 1000 keys a page and deletes page by page.
SELECT t.clip_at_download('ws-purge', 1000) AS p \gset
SELECT t.s3_run() > 0 AS ran;
INSERT INTO t.bucket
SELECT hagen.get_video_path('ws-purge', :'p', format('frame_%s.jpg', lpad(i::text, 4, '0'))) FROM generate_series(1, 2345) i
UNION ALL SELECT hagen.get_video_path('ws-purge', :'p', 'a & <b>.mp4')
UNION ALL SELECT format('ws-purge/videos/%s/%s', :'p', k) FROM t.hostile_keys WHERE k <> ''
UNION ALL SELECT hagen.get_video_path('ws-purge', '00000000-0000-0000-0000-000000000001', 'other.mp4')
UNION ALL SELECT 'ws-purge/videos/other.mp4';
SELECT count(*) AS objects FROM t.bucket;
DELETE FROM hagen.video_project WHERE id = :'p';
SELECT kind, step, status, project_id, t.mask(state ->> 'prefix') AS prefix, run_at <= now() AS due
FROM hagen.job WHERE kind = 'purge';
SELECT e.effect ->> 'method' AS method, t.mask(e.effect ->> 'url') AS url FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT * FROM t.s3_tick();
SELECT jsonb_array_length(state -> 'keys') AS keys, state -> 'more' AS more, state ->> 'token' ~ '[+/=]' AS token_needs_encoding
FROM hagen.job WHERE kind = 'purge';
SELECT e.effect ->> 'method' AS method, e.effect ->> 'url' AS url,
	   e.effect -> 'headers' ->> 'content-md5' = encode(decode(md5(convert_to(e.effect ->> 'body_text', 'UTF8')), 'hex'), 'base64') AS md5_ok,
	   t.mask(left(e.effect ->> 'body_text', 140)) AS body
FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT * FROM t.s3_tick();
SELECT e.effect ->> 'url' ~ 'continuation-token=%2B%2F%3D[A-Za-z0-9%]+$' AS token_encoded FROM hagen.claim_jobs('http', 1) e;
UPDATE hagen.job SET status = 'queued', lease_token = NULL, attempts = 0 WHERE status = 'running';
SELECT t.s3_run() > 0 AS ran;
SELECT status, state -> 'deleted' AS deleted, state -> 'pages' AS pages, state -> 'failed' AS failed, last_error
FROM hagen.job WHERE kind = 'purge';
SELECT key FROM t.bucket ORDER BY key;
SELECT level, t.mask(message) AS message FROM hagen.job_log
WHERE job_id = (SELECT id FROM hagen.job WHERE kind = 'purge') ORDER BY id;

-- 12. A project deleted in the middle of a multipart upload: the upload is
-- aborted first, and the purge waits for the requests still in flight.
SELECT t.clip_at_download('ws-purge-mid', 104857600) AS p \gset
SELECT count(*) AS effects FROM t.s3_tick();
SELECT count(*) AS effects FROM t.s3_tick();
SELECT count(*) AS in_flight FROM hagen.claim_jobs('http', 2);
DELETE FROM hagen.video_project WHERE id = :'p';
SELECT step, jsonb_array_length(state -> 'aborts') AS aborts, state -> 'aborts' -> 0 ->> 'upload_id' AS upload_id,
	   run_at > now() + interval '1 minute' AS waits_for_leases
FROM hagen.job WHERE kind = 'purge' AND status = 'queued';
SELECT count(*) AS jobs_of_the_project FROM hagen.job WHERE project_id = :'p';
SELECT * FROM t.s3_tick();
SELECT * FROM t.s3_tick();
SELECT level, t.mask(message) AS message FROM hagen.job_log
WHERE job_id = (SELECT max(id) FROM hagen.job WHERE kind = 'purge') ORDER BY id;

-- 13. Keys S3 will not delete fail the purge, naming one.
SELECT t.clip_at_download('ws-locked', 1000) AS p \gset
SELECT t.s3_run() > 0 AS ran;
UPDATE hagen.job SET status = 'canceled' WHERE project_id = :'p' AND kind = 'compile';
UPDATE hagen.video_project SET status = 'completed' WHERE id = :'p';
INSERT INTO t.bucket SELECT hagen.get_video_path('ws-locked', :'p', i || '.mp4') FROM generate_series(1, 5) i;
INSERT INTO t.locked SELECT hagen.get_video_path('ws-locked', :'p', '3.mp4');
SELECT hagen.delete_project_objects(:'p') IS NOT NULL AS queued;
SELECT hagen.delete_project_objects(:'p') = hagen.delete_project_objects(:'p') AS queued_once;
SELECT t.s3_run() > 0 AS ran;
SELECT status, state -> 'deleted' AS deleted, state -> 'failed' AS failed, t.mask(last_error) AS error
FROM hagen.job WHERE kind = 'purge' AND state ->> 'prefix' LIKE 'ws-locked/%';
SELECT count(*) AS left_over FROM t.bucket WHERE key LIKE 'ws-locked/%';
-- Listing errors are S3 errors like the others.
INSERT INTO t.s3_script (step, outcome) VALUES
	('list', '{"status": 404, "body_text": "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>"}');
SELECT hagen.delete_project_objects(:'p') IS NOT NULL AS queued;
SELECT t.s3_run() > 0 AS ran;
SELECT status, t.mask(last_error) AS error FROM hagen.job
WHERE kind = 'purge' AND state ->> 'prefix' LIKE 'ws-locked/%' ORDER BY id DESC LIMIT 1;

-- 14. delete_project_objects: what it refuses.
SELECT t.clip_at_download('ws-running', 1000) AS p \gset
SELECT t.err(format('SELECT hagen.delete_project_objects(%L)', :'p'));
SELECT t.err(format('SELECT hagen.delete_project_objects(%L, %L)', :'p', 'ws-other'));
SELECT t.err($$SELECT hagen.delete_project_objects('00000000-0000-0000-0000-0000000000aa')$$);
SELECT t.err($$SELECT hagen.delete_project_objects(NULL)$$);
SELECT hagen.delete_project_objects('00000000-0000-0000-0000-0000000000aa', 'ws-gone') AS gone \gset
SELECT step, project_id, state ->> 'prefix' AS prefix FROM hagen.job WHERE id = :gone;
-- A project never started stored nothing: deleting it queues nothing.
SELECT hagen.create_project('ws-never') AS p \gset
SELECT count(*) AS purges_before FROM hagen.job WHERE kind = 'purge' \gset
DELETE FROM hagen.video_project WHERE id = :'p';
SELECT count(*) - :purges_before AS new_purges FROM hagen.job WHERE kind = 'purge';
SELECT hagen.cancel_video(p.id) IS NOT NULL AS canceled FROM hagen.video_project p WHERE workspace_id = 'ws-running';
UPDATE hagen.job SET status = 'canceled', finished_at = now() WHERE status IN ('queued', 'running');
-- Finished purges leave the history like the rest.
SELECT hagen.purge_history('-1 second') > 0 AS purged;
SELECT count(*) AS purge_jobs_left FROM hagen.job WHERE kind = 'purge';

-- 15. A tenant deletes the objects of its own workspaces only.
CREATE ROLE hk_s3_tenant_a LOGIN IN ROLE hagen_user;
CREATE ROLE hk_s3_tenant_b LOGIN IN ROLE hagen_user;
INSERT INTO hagen.workspace_role VALUES ('ws-a', 'hk_s3_tenant_a'), ('ws-b', 'hk_s3_tenant_b');
SELECT t.clip_at_download('ws-a', 1000) AS pa \gset
SELECT hagen.cancel_video(:'pa') IS NOT NULL AS canceled;
SET SESSION AUTHORIZATION hk_s3_tenant_b;
SELECT t.err(format('SELECT hagen.delete_project_objects(%L)', :'pa'));
SELECT t.err(format('SELECT hagen.delete_project_objects(%L, %L)', '00000000-0000-0000-0000-0000000000bb', 'ws-a'));
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION hk_s3_tenant_a;
SELECT hagen.delete_project_objects(:'pa') IS NOT NULL AS own_purge_queued;
RESET SESSION AUTHORIZATION;
UPDATE hagen.job SET status = 'canceled', finished_at = now() WHERE status IN ('queued', 'running');
DELETE FROM hagen.workspace_role;
DROP ROLE hk_s3_tenant_a, hk_s3_tenant_b;

-- 16. Answers that are not the XML expected: the step is retried, the log
-- says what came instead, and the work completes.
SELECT t.clip_at_download('ws-badxml', 104857600) AS p \gset
INSERT INTO t.s3_script (step, outcome) VALUES
	('upload_create', '{"status": 200, "body_text": "<html><body>Welcome to nginx!</body></html>"}'),
	('upload_complete', '{"status": 200, "body_text": "<?xml version=\"1.0\"?><CompleteMultipartUploadResult><Location>x</Loc"}');
SELECT t.s3_run() > 0 AS ran;
SELECT status FROM hagen.video_clip WHERE project_id = :'p';
SELECT level, regexp_replace(t.mask(message), '\d+ ms', 'N ms') AS message FROM hagen.job_log
WHERE job_id = (SELECT id FROM hagen.job WHERE project_id = :'p' AND kind = 'clip') AND level <> 'info'
ORDER BY id;
UPDATE hagen.job SET status = 'canceled' WHERE project_id = :'p' AND kind = 'compile';
UPDATE hagen.video_project SET status = 'completed' WHERE id = :'p';
INSERT INTO t.bucket SELECT format('ws-badxml/videos/%s/%s', :'p', k) FROM t.hostile_keys WHERE k <> '';
INSERT INTO t.s3_script (step, outcome) VALUES
	('list', '{"status": 200, "body_text": "<ListBucketResult><Contents><Key>cut"}'),
	('delete', '{"status": 200, "body_text": "<html><body>Welcome to nginx!</body></html>"}');
SELECT hagen.delete_project_objects(:'p') AS purge \gset
SELECT t.s3_run() > 0 AS ran;
SELECT status, state -> 'deleted' AS deleted, state -> 'failed' AS failed FROM hagen.job WHERE id = :purge;
SELECT count(*) AS left_over FROM t.bucket WHERE key LIKE 'ws-badxml/%';
SELECT level, t.mask(regexp_replace(message, '\d+ ms', 'N ms')) AS message FROM hagen.job_log
WHERE job_id = :purge AND level <> 'info' ORDER BY id;
