-- hagenkit install script, part 55: storage (S3 / Cloudflare R2) helpers
-- that SQL users call directly.

CREATE FUNCTION hagen._presign(url text, method text, expires_s integer, at timestamptz)
	RETURNS text LANGUAGE c STRICT VOLATILE AS 'MODULE_PATHNAME', 'hagen_presign';

CREATE FUNCTION hagen._sigv4_selftest(OUT vector text, OUT expected text, OUT computed text,
									  OUT ok boolean)
	RETURNS SETOF record LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hagen_sigv4_selftest';
COMMENT ON FUNCTION hagen._sigv4_selftest() IS
	'Checks the SigV4 signer against the AWS S3 documentation examples.';

-- Checks a storage key: relative, no "." or ".." segments, no control
-- characters, at most 1024 bytes.
CREATE FUNCTION hagen._check_key(key text) RETURNS void
	LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	IF key IS NULL OR key = '' OR key ~ '^/' OR key ~ '(^|/)\.\.?(/|$)' OR key ~ '[[:cntrl:]]'
	   OR key ~ '//' OR octet_length(key) > 1024 THEN
		RAISE EXCEPTION 'invalid storage key "%"', coalesce(left(key, 200), 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A key is a relative path of at most 1024 bytes such as "ws/videos/<project>/final.mp4", without a leading "/", empty segments or "." and ".." segments.';
	END IF;
END;
$$;

-- A query-string presigned URL (AWS SigV4) for an object of the bucket:
-- anyone holding it may GET / PUT / HEAD / DELETE that one key until it
-- expires.  at is when the validity starts (now by default).
CREATE FUNCTION hagen.presign_url(key text, method text DEFAULT 'GET',
								  expires_in interval DEFAULT '1 hour',
								  at timestamptz DEFAULT now())
	RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	seconds numeric := extract(epoch FROM expires_in);
BEGIN
	PERFORM hagen._check_key(key);
	-- Keys start with their workspace: a tenant presigns only its own.
	PERFORM hagen._check_workspace(split_part(key, '/', 1));
	PERFORM hagen._check_choice('method', upper(method), ARRAY['GET', 'PUT', 'HEAD', 'DELETE']);
	IF seconds IS NULL OR seconds < 1 OR seconds > 604800 THEN
		RAISE EXCEPTION 'invalid expiry of % seconds', coalesce(round(seconds, 3)::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A presigned URL lives from 1 second to 7 days.';
	END IF;
	IF at IS NULL THEN
		RAISE EXCEPTION 'at must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN hagen._presign(hagen._s3_url(key), upper(method), floor(seconds)::integer, at);
END;
$$;
