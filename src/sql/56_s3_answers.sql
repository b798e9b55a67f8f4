-- hagenkit install script, part 56: reading S3's answers (XML) and
-- deciding what an S3 error means.
--
-- S3 and R2 answer in small, machine-written XML without CDATA or
-- namespace prefixes, so the few elements we need are read with regular
-- expressions (no libxml needed) and their entities decoded.

-- Decodes XML character references (&amp; &lt; &gt; &quot; &apos; &#N; &#xH;)
-- left to right, so "&amp;lt;" stays "&lt;".
CREATE FUNCTION hagen._xml_unescape(value text) RETURNS text
	LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
	done text := '';
	rest text := value;
	at integer;
	ent text;
	code bigint;
BEGIN
	LOOP
		at := position('&' IN rest);
		EXIT WHEN at = 0;
		done := done || left(rest, at - 1);
		rest := substr(rest, at);
		ent := substring(rest FROM '^&(#x[0-9A-Fa-f]{1,6}|#[0-9]{1,7}|amp|lt|gt|quot|apos);');
		IF ent IS NULL THEN
			done := done || '&';
			rest := substr(rest, 2);
			CONTINUE;
		END IF;
		IF ent LIKE '#x%' THEN
			code := ('x' || lpad(substr(ent, 3), 8, '0'))::bit(32)::bigint;
		ELSIF ent LIKE '#%' THEN
			code := substr(ent, 2)::bigint;
		END IF;
		done := done || CASE ent WHEN 'amp' THEN '&' WHEN 'lt' THEN '<' WHEN 'gt' THEN '>'
								 WHEN 'quot' THEN '"' WHEN 'apos' THEN ''''
								 ELSE CASE WHEN code BETWEEN 1 AND 1114111 AND code NOT BETWEEN 55296 AND 57343
										   THEN chr(code::integer) ELSE '?' END END;
		rest := substr(rest, length(ent) + 3);
	END LOOP;
	RETURN done || rest;
END;
$$;

-- Text made safe for an XML element.
CREATE FUNCTION hagen._xml_escape(value text) RETURNS text
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	RETURN replace(replace(replace(replace(replace(value, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
						   '"', '&quot;'), '''', '&apos;');

-- The values of every <tag>value</tag> of an XML text, in document order
-- (an empty array when there is none).
CREATE FUNCTION hagen._xml_values(body text, tag text) RETURNS text[]
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (
		SELECT coalesce(array_agg(hagen._xml_unescape(m[1]) ORDER BY n), '{}')
		FROM regexp_matches(coalesce(body, ''), '<' || tag || '>([^<]*)</' || tag || '>', 'g')
			 WITH ORDINALITY AS x(m, n)
	);

-- The value of the first <tag> of an XML text, or NULL.
CREATE FUNCTION hagen._xml_value(body text, tag text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (hagen._xml_values(body, tag))[1];

-- "Code: Message" of an S3 error answer (<Error><Code>…</Code><Message>…),
-- or NULL when the answer is not one.
CREATE FUNCTION hagen._s3_error(o jsonb) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN o ->> 'body_text' ~ '<Error>' THEN
		nullif(concat_ws(': ', hagen._xml_value(o ->> 'body_text', 'Code'),
						 hagen._xml_value(o ->> 'body_text', 'Message')), '') END;

-- The decision for an S3 request that did not succeed: transport errors,
-- 429, 5xx and the codes S3 asks clients to retry (SlowDown, InternalError,
-- RequestTimeout…) are retried with back-off (at least Retry-After); any
-- other answer is final.  The error names what was being done, the HTTP
-- status and S3's own Code and Message.
CREATE FUNCTION hagen._s3_failure(o jsonb, what text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	code text := hagen._xml_value(o ->> 'body_text', 'Code');
	ra text := o -> 'headers' ->> 'retry-after';
	err text;
BEGIN
	err := format('%s failed: %s', what,
		CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
			 ELSE format('HTTP %s%s', status, coalesce(': ' || left(hagen._s3_error(o), 400), '')) END);
	IF status = 0 OR status = 429 OR status >= 500
	   OR code IN ('SlowDown', 'InternalError', 'ServiceUnavailable', 'RequestTimeout',
				   'RequestTimeTooSkewed', 'OperationAborted') THEN
		RETURN jsonb_strip_nulls(jsonb_build_object('action', 'retry', 'error', err,
			'retry_after_ms', CASE WHEN ra ~ '^\s*\d+(\.\d+)?\s*$' THEN (ra::numeric * 1000)::bigint END));
	END IF;
	RETURN jsonb_build_object('action', 'fail', 'error', err);
END;
$$;
