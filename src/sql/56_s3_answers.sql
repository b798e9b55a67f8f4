-- hagenkit install script, part 56: reading S3's answers (XML) and
-- deciding what an S3 error means.
--
-- Answers are parsed by the server's libxml (XMLPARSE, XMLTABLE, xpath):
-- entities, character references, CDATA and namespaces are the parser's
-- business, and a DOCTYPE cannot make it read a file (PostgreSQL refuses
-- external entities).  S3 answers in the namespace
-- http://s3.amazonaws.com/doc/2006-03-01/, but its error answers, and R2 at
-- times, use none: elements are matched by their local name, whatever
-- their namespace.  An answer that is not XML never raises an error here:
-- the step gets a decision naming what the answer began with.

-- An answer body as an XML document, or NULL when it is not one (empty,
-- not well-formed, or XML content that is not a single document).  Checked
-- with xml_is_well_formed_document first, so no error is raised and no
-- subtransaction is needed.
CREATE FUNCTION hagen._xml_doc(body text) RETURNS xml
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN CASE WHEN xml_is_well_formed_document(body) THEN XMLPARSE(DOCUMENT body) END;

-- The XPath of a path of element names, matched by local name: "/A/B" from
-- the root, "//A/B" anywhere, "A/B" relative to the context node (for the
-- columns of an XMLTABLE).
CREATE FUNCTION hagen._xml_xpath(path text) RETURNS text
	LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
	IF path !~ '^(//?)?[A-Za-z_][A-Za-z0-9_.-]*(/[A-Za-z_][A-Za-z0-9_.-]*)*$' THEN
		RAISE EXCEPTION 'invalid XML path "%"', path
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A path is element names separated by "/", such as "/ListBucketResult/Contents/Key".';
	END IF;
	RETURN substring(path FROM '^/*')
		|| regexp_replace(ltrim(path, '/'), '([^/]+)', '*[local-name()="\1"]', 'g');
END;
$$;

-- The text of every element at path (see _xml_xpath) of a document, in
-- document order; an empty array when there is none or doc is NULL.
CREATE FUNCTION hagen._xml_values(doc xml, path text) RETURNS text[]
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (
		SELECT coalesce(array_agg(x.v ORDER BY x.n), '{}')
		FROM XMLTABLE((hagen._xml_xpath(path)) PASSING (doc)
					  COLUMNS n FOR ORDINALITY, v text PATH '.') AS x
	);

-- The text of the first element at path of a document, or NULL.
CREATE FUNCTION hagen._xml_value(doc xml, path text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (hagen._xml_values(doc, path))[1];

-- The same for an answer body: every element named tag, anywhere in it
-- (none when the body is not XML).
CREATE FUNCTION hagen._xml_values(body text, tag text) RETURNS text[]
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN hagen._xml_values(hagen._xml_doc(body), '//' || tag);

CREATE FUNCTION hagen._xml_value(body text, tag text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN (hagen._xml_values(hagen._xml_doc(body), '//' || tag))[1];

-- The local name of a document's root element ("ListBucketResult"), or NULL.
CREATE FUNCTION hagen._xml_root(doc xml) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN nullif((xpath('local-name(/*)', doc))[1]::text, '');

-- What a body that should be XML was instead, for an error message; NULL
-- when it is an XML document, or empty.
CREATE FUNCTION hagen._xml_not_doc(body text) RETURNS text
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	RETURN CASE WHEN coalesce(body, '') <> '' AND NOT xml_is_well_formed_document(body) THEN
		format('the answer was not valid XML (%s bytes): it began with "%s%s"', octet_length(body),
			   left(regexp_replace(body, '[[:space:][:cntrl:]]+', ' ', 'g'), 80),
			   CASE WHEN length(body) > 80 THEN '...' ELSE '' END) END;

-- "Code: Message" of an S3 error answer (<Error><Code>…</Code><Message>…),
-- or NULL when the answer is not one.
CREATE FUNCTION hagen._s3_error(o jsonb) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN (
		SELECT nullif(concat_ws(': ', e.code, e.message), '')
		FROM XMLTABLE('/*[local-name()="Error"]' PASSING (hagen._xml_doc(o ->> 'body_text'))
					  COLUMNS code text PATH '*[local-name()="Code"][1]',
							  message text PATH '*[local-name()="Message"][1]') AS e
	);

-- The decision for an S3 request that did not succeed: transport errors,
-- 429, 5xx and the codes S3 asks clients to retry (SlowDown, InternalError,
-- RequestTimeout…) are retried with back-off (at least Retry-After); any
-- other answer is final.  The error names what was being done, the HTTP
-- status and S3's own Code and Message (or what came instead of them).
CREATE FUNCTION hagen._s3_failure(o jsonb, what text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	code text := hagen._xml_value(hagen._xml_doc(o ->> 'body_text'), '/Error/Code');
	ra text := o -> 'headers' ->> 'retry-after';
	err text;
BEGIN
	err := format('%s failed: %s', what,
		CASE WHEN status = 0 THEN coalesce(o ->> 'error', 'no answer')
			 ELSE format('HTTP %s%s', status,
						 coalesce(': ' || left(coalesce(hagen._s3_error(o),
														hagen._xml_not_doc(o ->> 'body_text')), 400), '')) END);
	IF status = 0 OR status = 429 OR status >= 500
	   OR code IN ('SlowDown', 'InternalError', 'ServiceUnavailable', 'RequestTimeout',
				   'RequestTimeTooSkewed', 'OperationAborted') THEN
		RETURN jsonb_strip_nulls(jsonb_build_object('action', 'retry', 'error', err,
			'retry_after_ms', CASE WHEN ra ~ '^\s*\d+(\.\d+)?\s*$' THEN (ra::numeric * 1000)::bigint END));
	END IF;
	RETURN jsonb_build_object('action', 'fail', 'error', err);
END;
$$;

-- The decision for a successful (2xx) answer that is not the document
-- expected (the local name of its root element), or NULL when it is.  An
-- <Error> in a 200 (S3 may answer CompleteMultipartUpload so) is an S3
-- error like the others; an answer that is not XML, or another document,
-- is retried with an error saying what came instead.
CREATE FUNCTION hagen._s3_unexpected(o jsonb, doc xml, expected text, what text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	root text := hagen._xml_root(doc);
BEGIN
	IF root = expected THEN
		RETURN NULL;
	ELSIF root = 'Error' THEN
		RETURN hagen._s3_failure(o, what);
	END IF;
	RETURN jsonb_build_object('action', 'retry', 'error',
		format('%s failed: HTTP %s, but %s', what, o ->> 'status',
			   CASE WHEN doc IS NOT NULL THEN format('the answer was a <%s>, not a <%s>', root, expected)
					ELSE coalesce(hagen._xml_not_doc(o ->> 'body_text'),
								  format('the answer was empty (a <%s> was expected)', expected)) END));
END;
$$;
