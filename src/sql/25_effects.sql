-- hagenkit install script, part 25: building effects.
--
-- Every effect SQL hands to a worker is built here, so that its shape is
-- defined once (doc/effects.md describes every type, its keys and the keys
-- of its outcome).  An HTTP request names a timeout class instead of a
-- number: what a request may take follows from what it carries.

-- The time limit of one HTTP request of a class, in milliseconds:
--   status   30 s   a status poll, a cancel, a small control request
--   request  60 s   a submit, a result, an S3 create / head / list / abort
--   batch    2 min  an S3 DeleteObjects of up to 1000 keys
--   image    2 min  an image of up to 10 MB, either way
--   media   10 min  a video or music file, either way; a multipart completion
--   part    2 min + 10 ms per KB of the body (at least 100 KB/s): a part
CREATE FUNCTION hagen._timeout_ms(class text, body_bytes bigint DEFAULT NULL) RETURNS bigint
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	CASE class
	WHEN 'status' THEN RETURN 30000;
	WHEN 'request' THEN RETURN 60000;
	WHEN 'batch', 'image' THEN RETURN 120000;
	WHEN 'media' THEN RETURN 600000;
	WHEN 'part' THEN RETURN 120000 + coalesce(body_bytes, 0) / 100;
	ELSE
		RAISE EXCEPTION 'unknown timeout class "%"', class
			USING HINT = 'Use status, request, batch, image, media or part.';
	END CASE;
END;
$$;

-- An HTTP effect: method, URL, the credentials the executor adds at send
-- time (none, fal, xai, s3), a timeout class, and the other keys of the
-- effect (headers, body / body_text / body_file, save_to, guard, ...).
CREATE FUNCTION hagen._http(method text, url text, auth text DEFAULT 'none',
							timeout text DEFAULT 'request', extra jsonb DEFAULT '{}')
	RETURNS jsonb LANGUAGE sql IMMUTABLE
	RETURN jsonb_build_object('type', 'http', 'method', method, 'url', url, 'auth', auth,
		'timeout_ms', hagen._timeout_ms(timeout, (extra ->> 'body_length')::bigint))
		|| coalesce(extra, '{}');

-- An effect with nothing to do but come back at once (a job that only
-- needs to look at the database again).
CREATE FUNCTION hagen._noop(reason text) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN jsonb_build_object('type', 'noop', 'reason', reason);

-- Which workers carry out a step of a job: the compile workers run
-- hagen-compile ("compile" lane: a compile's plan, its single run or its
-- join, the encoding of a chunk, the fitting of a photo), the dispatcher
-- everything else ("http").  A job changes lanes as it moves from step to
-- step.
CREATE FUNCTION hagen._step_lane(kind text, step text) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN kind = 'compile' AND step IN ('compile', 'plan', 'join') THEN 'compile'
				WHEN kind = 'chunk' AND step = 'encode' THEN 'compile'
				WHEN step = 'image_frame' THEN 'compile'
				ELSE 'http' END;

-- An image effect (compile lane): hagen-compile fits the photo in the work
-- file input to an aspect ratio ("9:16") by fit (crop or pad), at most
-- max_side pixels on its longer side and max_bytes as a JPEG, into output.
CREATE FUNCTION hagen._image_effect(input text, output text, aspect text, fit text,
									max_side integer, max_bytes integer) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN jsonb_build_object('type', 'image', 'input', input, 'output', output, 'aspect', aspect,
		'fit', fit, 'max_side', max_side, 'min_side', least(300, max_side), 'max_bytes', max_bytes,
		'timeout_ms', 60000);
