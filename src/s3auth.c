/*-------------------------------------------------------------------------
 *
 * s3auth.c
 *	  AWS Signature Version 4 for S3 (Cloudflare R2), on OpenSSL: the
 *	  Authorization header of "s3" requests, and presigned URLs.
 *
 * Our own signer rather than libs3 (Debian's signs only V2, which R2
 * refuses) or libcurl 7.88's CURLOPT_AWS_SIGV4 (it sends no
 * x-amz-content-sha256, signs the path and query raw and unsorted, signs
 * an "Expect:" removal, and cannot presign).  The S3 flavour of SigV4:
 * paths are not double-encoded, valueless query parameters sign as
 * "name=", x-amz-content-sha256 is always sent (UNSIGNED-PAYLOAD: bodies
 * are streamed from files), headers are lower-cased, trimmed and sorted.
 *
 * URLs given to the signer are already encoded the S3 way (SQL builds
 * them with hagen._uri_encode): the canonical path is the URL's path as is,
 * the canonical query is re-encoded and sorted here.
 *
 * IDENTIFICATION
 *	  src/s3auth.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <time.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fmgr.h"
#include "funcapi.h"
#include "http.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#define UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

/* Lower-case hex of bytes (PostgreSQL's hex_encode), NUL-terminated. */
static void
to_hex(const unsigned char *in, int n, char *out)
{
	out[hex_encode((const char *) in, n, out)] = '\0';
}

/* Hex SHA-256 of a string. */
static void
sha256_hex(const char *s, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL);
	to_hex(md, (int) len, out);
}

/* HMAC-SHA256 of msg under key; out receives 32 bytes. */
static void
hmac(const unsigned char *key, int keylen, const char *msg, unsigned char *out)
{
	unsigned int len = 32;

	HMAC(EVP_sha256(), key, keylen, (const unsigned char *) msg, strlen(msg), out, &len);
}

/*
 * hagen_percent_encode appends len bytes of s percent-encoded the way SigV4
 * and URLs want it: the unreserved characters of RFC 3986 (A-Z a-z 0-9 - .
 * _ ~) kept, "/" kept when asked, every other byte as %XX in upper case.
 * That is libcurl's curl_easy_escape, segment by segment when "/" is kept.
 * The one encoder of hagenkit: the signer's canonical query and
 * hagen._uri_encode (every URL SQL builds) both use it.
 */
void
hagen_percent_encode(StringInfo buf, const char *s, int len, bool keep_slash)
{
	while (len > 0)
	{
		const char *slash = keep_slash ? memchr(s, '/', len) : NULL;
		int			seg = slash ? (int) (slash - s) : len;

		if (seg > 0)
		{
			char	   *e = curl_easy_escape(NULL, s, seg);

			if (e == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory while percent-encoding %d bytes", seg)));
			appendStringInfoString(buf, e);
			curl_free(e);
		}
		if (slash)
		{
			appendStringInfoChar(buf, '/');
			seg++;
		}
		s += seg;
		len -= seg;
	}
}

/* A query part percent-decoded (libcurl's curl_easy_unescape), palloc'd. */
static char *
uri_decode(const char *s, int *len)
{
	char	   *d = curl_easy_unescape(NULL, s, 0, len);
	char	   *copy;

	if (d == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while percent-decoding a query")));
	copy = pnstrdup(d, *len);
	curl_free(d);
	return copy;
}

typedef struct QueryParam
{
	char	   *name;			/* canonical (encoded) */
	char	   *value;
} QueryParam;

static int
param_cmp(const void *a, const void *b)
{
	const QueryParam *x = a;
	const QueryParam *y = b;
	int			c = strcmp(x->name, y->name);

	return c != 0 ? c : strcmp(x->value, y->value);
}

/* The canonical query string of a raw query (without '?'), plus extra params. */
static char *
canonical_query(const char *query, QueryParam *extra, int nextra)
{
	QueryParam *params;
	int			n = 0;
	int			cap = nextra + 8;
	char	   *copy = pstrdup(query ? query : "");
	char	   *tok;
	char	   *save = NULL;
	StringInfoData buf;
	int			i;

	params = palloc(sizeof(QueryParam) * cap);
	for (tok = strtok_r(copy, "&", &save); tok; tok = strtok_r(NULL, "&", &save))
	{
		char	   *eq = strchr(tok, '=');
		char	   *name = tok;
		char	   *value = eq ? eq + 1 : "";
		StringInfoData e;
		int			len;

		if (eq)
			*eq = '\0';
		if (n == cap)
			params = repalloc(params, sizeof(QueryParam) * (cap *= 2));
		initStringInfo(&e);
		name = uri_decode(name, &len);
		hagen_percent_encode(&e, name, len, false);
		params[n].name = e.data;
		initStringInfo(&e);
		value = uri_decode(value, &len);
		hagen_percent_encode(&e, value, len, false);
		params[n].value = e.data;
		n++;
	}
	for (i = 0; i < nextra; i++)
	{
		if (n == cap)
			params = repalloc(params, sizeof(QueryParam) * (cap *= 2));
		params[n++] = extra[i];
	}
	qsort(params, n, sizeof(QueryParam), param_cmp);
	initStringInfo(&buf);
	for (i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s=%s", i > 0 ? "&" : "", params[i].name, params[i].value);
	return buf.data;
}

/* Splits a URL into host (with port when given), path and query. */
static bool
split_url(const char *url, char **host, char **path, char **query, char **error)
{
	CURLU	   *u = curl_url();
	char	   *h = NULL;
	char	   *port = NULL;
	char	   *p = NULL;
	char	   *q = NULL;
	bool		ok = false;

	if (u && curl_url_set(u, CURLUPART_URL, url, CURLU_PATH_AS_IS) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_PATH, &p, 0) == CURLUE_OK)
	{
		curl_url_get(u, CURLUPART_PORT, &port, 0);
		curl_url_get(u, CURLUPART_QUERY, &q, 0);
		*host = port ? psprintf("%s:%s", h, port) : pstrdup(h);
		*path = pstrdup(p);
		*query = q ? pstrdup(q) : NULL;
		ok = true;
	}
	else
		*error = psprintf("cannot sign \"%s\": not a valid URL", url);
	curl_free(h);
	curl_free(port);
	curl_free(p);
	curl_free(q);
	if (u)
		curl_url_cleanup(u);
	return ok;
}

/* The signing key for a date (yyyymmdd) and region; out receives 32 bytes. */
static void
signing_key(const char *secret, const char *date, const char *region, unsigned char *out)
{
	char	   *k = psprintf("AWS4%s", secret);
	unsigned char k1[32];
	unsigned char k2[32];
	unsigned char k3[32];

	hmac((unsigned char *) k, strlen(k), date, k1);
	explicit_bzero(k, strlen(k));
	pfree(k);
	hmac(k1, 32, region, k2);
	hmac(k2, 32, "s3", k3);
	hmac(k3, 32, "aws4_request", out);
}

/* The hex signature of a canonical request. */
static void
sign(const char *creq, const char *amzdate, const char *scope, const char *secret,
	 const char *date, const char *region, char *sig_hex)
{
	char		creq_hash[65];
	char	   *sts;
	unsigned char key[32];
	unsigned char sig[32];

	sha256_hex(creq, creq_hash);
	sts = psprintf("AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, scope, creq_hash);
	signing_key(secret, date, region, key);
	hmac(key, 32, sts, sig);
	explicit_bzero(key, sizeof(key));
	to_hex(sig, 32, sig_hex);
}

/* Now as x-amz-date (yyyymmddThhmmssZ) and its date part. */
static void
amz_time(time_t t, char *amzdate, char *date)
{
	struct tm	tm;

	gmtime_r(&t, &tm);
	strftime(amzdate, 17, "%Y%m%dT%H%M%SZ", &tm);
	strftime(date, 9, "%Y%m%d", &tm);
}

/* Trims a header value and collapses its runs of spaces. */
static char *
canonical_value(const char *v)
{
	StringInfoData buf;
	bool		space = false;

	while (*v == ' ' || *v == '\t')
		v++;
	initStringInfo(&buf);
	for (; *v; v++)
	{
		if (*v == ' ' || *v == '\t')
			space = true;
		else
		{
			if (space && buf.len > 0)
				appendStringInfoChar(&buf, ' ');
			space = false;
			appendStringInfoChar(&buf, *v);
		}
	}
	return buf.data;
}

typedef struct SignedHeader
{
	char	   *name;
	char	   *value;
} SignedHeader;

static int
header_cmp(const void *a, const void *b)
{
	return strcmp(((const SignedHeader *) a)->name, ((const SignedHeader *) b)->name);
}

/*
 * The value of the Authorization header of a request: SigV4 over the
 * method, canonical path, raw query, the headers to sign (sorted here) and
 * the payload hash, at amzdate, in region, with the key.
 */
static char *
authorization(const char *method, const char *path, const char *query,
			  SignedHeader *hs, int nh, const char *payload, const char *amzdate,
			  const char *region, const char *key_id, const char *secret)
{
	StringInfoData canon;
	StringInfoData names;
	char		date[9];
	char	   *scope;
	char		sig[65];
	int			i;

	memcpy(date, amzdate, 8);
	date[8] = '\0';
	qsort(hs, nh, sizeof(SignedHeader), header_cmp);
	initStringInfo(&canon);
	initStringInfo(&names);
	appendStringInfo(&canon, "%s\n%s\n%s\n", method, path, canonical_query(query, NULL, 0));
	for (i = 0; i < nh; i++)
	{
		appendStringInfo(&canon, "%s:%s\n", hs[i].name, hs[i].value);
		appendStringInfo(&names, "%s%s", i > 0 ? ";" : "", hs[i].name);
	}
	appendStringInfo(&canon, "\n%s\n%s", names.data, payload);
	scope = psprintf("%s/%s/s3/aws4_request", date, region);
	sign(canon.data, amzdate, scope, secret, date, region, sig);
	return psprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
					key_id, scope, names.data, sig);
}

/*
 * A presigned URL for an (encoded) S3 URL, valid expires seconds from t;
 * only host is signed.  NULL and *error when the URL is not valid.
 */
static char *
presign(const char *url, const char *method, int expires, time_t t, const char *region,
		const char *key_id, const char *secret, char **error)
{
	char	   *host;
	char	   *path;
	char	   *query;
	char		amzdate[17];
	char		date[9];
	char	   *scope;
	StringInfoData cred;
	QueryParam	extra[5];
	char	   *cq;
	char	   *creq;
	char		sig[65];
	char	   *base;
	char	   *raw;

	if (!split_url(url, &host, &path, &query, error))
		return NULL;
	amz_time(t, amzdate, date);
	scope = psprintf("%s/%s/s3/aws4_request", date, region);
	raw = psprintf("%s/%s", key_id, scope);
	initStringInfo(&cred);
	hagen_percent_encode(&cred, raw, strlen(raw), false);
	extra[0].name = "X-Amz-Algorithm";
	extra[0].value = "AWS4-HMAC-SHA256";
	extra[1].name = "X-Amz-Credential";
	extra[1].value = cred.data;
	extra[2].name = "X-Amz-Date";
	extra[2].value = amzdate;
	extra[3].name = "X-Amz-Expires";
	extra[3].value = psprintf("%d", expires);
	extra[4].name = "X-Amz-SignedHeaders";
	extra[4].value = "host";
	cq = canonical_query(query, extra, 5);
	creq = psprintf("%s\n%s\n%s\nhost:%s\n\nhost\n%s", method, path, cq, host, UNSIGNED_PAYLOAD);
	sign(creq, amzdate, scope, secret, date, region, sig);
	base = pstrdup(url);
	if (strchr(base, '?'))
		*strchr(base, '?') = '\0';
	return psprintf("%s?%s&X-Amz-Signature=%s", base, cq, sig);
}

/* The configured region, "auto" when unset. */
static const char *
region_setting(void)
{
	return hagen_s3_region && hagen_s3_region[0] ? hagen_s3_region : "auto";
}

/*
 * hagen_s3_sign adds x-amz-date, x-amz-content-sha256 and the SigV4
 * Authorization header to an "s3" request.  It signs host, the
 * x-amz-* headers, content-type and content-md5; the body is
 * UNSIGNED-PAYLOAD (it is streamed from a file).
 */
struct curl_slist *
hagen_s3_sign(struct curl_slist *headers, const char *method, const char *url, char **error)
{
	const char *key_id = hagen_secret(HAGEN_SECRET_S3_ACCESS_KEY_ID);
	const char *secret = hagen_secret(HAGEN_SECRET_S3_SECRET_ACCESS_KEY);
	char	   *host;
	char	   *path;
	char	   *query;
	char		amzdate[17];
	char		date[9];
	SignedHeader hs[32];
	int			nh = 0;
	struct curl_slist *h;
	char	   *auth;

	if (key_id[0] == '\0' || secret[0] == '\0')
	{
		*error = pstrdup("no storage credentials are configured (hagen.s3_access_key_id and hagen.s3_secret_access_key, or R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY)");
		return headers;
	}
	if (!split_url(url, &host, &path, &query, error))
		return headers;
	amz_time(time(NULL), amzdate, date);

	hs[nh].name = "host";
	hs[nh++].value = host;
	hs[nh].name = "x-amz-content-sha256";
	hs[nh++].value = UNSIGNED_PAYLOAD;
	hs[nh].name = "x-amz-date";
	hs[nh++].value = amzdate;
	for (h = headers; h && nh < (int) lengthof(hs); h = h->next)
	{
		char	   *colon = strchr(h->data, ':');
		char	   *name;
		char	   *p;

		if (colon == NULL || colon[1] == '\0')
			continue;			/* "Expect:" and the like remove a header */
		name = pnstrdup(h->data, colon - h->data);
		for (p = name; *p; p++)
			*p = pg_ascii_tolower((unsigned char) *p);
		if (strcmp(name, "content-type") != 0 && strncmp(name, "x-amz-", 6) != 0 &&
			strcmp(name, "content-md5") != 0)
			continue;
		hs[nh].name = name;
		hs[nh++].value = canonical_value(colon + 1);
	}
	auth = authorization(method, path, query, hs, nh, UNSIGNED_PAYLOAD, amzdate,
						 region_setting(), key_id, secret);
	headers = curl_slist_append(headers, psprintf("x-amz-date: %s", amzdate));
	headers = curl_slist_append(headers, "x-amz-content-sha256: " UNSIGNED_PAYLOAD);
	headers = curl_slist_append(headers, psprintf("Authorization: %s", auth));
	return headers;
}

PG_FUNCTION_INFO_V1(hagen_presign);

/*
 * hagen._presign(url, method, expires_s, at): a query-string presigned URL
 * for an S3 URL (already encoded), valid expires_s seconds from at, with
 * the configured credentials and region.  hagen.presign_url checks the
 * arguments and builds the URL.
 */
Datum
hagen_presign(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *method = text_to_cstring(PG_GETARG_TEXT_PP(1));
	int32		expires = PG_GETARG_INT32(2);
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(3);
	const char *key_id = hagen_secret(HAGEN_SECRET_S3_ACCESS_KEY_ID);
	const char *secret = hagen_secret(HAGEN_SECRET_S3_SECRET_ACCESS_KEY);
	char	   *error = NULL;
	char	   *signed_url;

	if (key_id[0] == '\0' || secret[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no storage credentials are configured"),
				 errhint("Set hagen.s3_access_key_id and hagen.s3_secret_access_key (or R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY) and reload.")));
	signed_url = presign(url, method, expires, (time_t) timestamptz_to_time_t(at),
						 region_setting(), key_id, secret, &error);
	if (signed_url == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", error)));
	PG_RETURN_TEXT_P(cstring_to_text(signed_url));
}

PG_FUNCTION_INFO_V1(hagen_sigv4_selftest);

/*
 * hagen._sigv4_selftest(): the signer against the AWS S3 documentation's
 * examples (their example key, not ours), one row per vector: name,
 * expected signature, the one computed, and whether they match.
 */
Datum
hagen_sigv4_selftest(PG_FUNCTION_ARGS)
{
	static const char *key = "AKIAIOSFODNN7EXAMPLE";
	static const char *secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
	static const char *empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	static const char *host = "examplebucket.s3.amazonaws.com";
	static const char *when = "20130524T000000Z";
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	SignedHeader hs[8];
	char	   *got;
	char	   *url;
	const char *sig;
	struct
	{
		const char *name;
		const char *expected;
	}			v[5] = {
		{"GET object with Range", "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"},
		{"PUT object test$file.text", "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"},
		{"GET bucket lifecycle (valueless parameter)", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"},
		{"GET bucket list (query parameters)", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"},
		{"presigned GET", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"}
	};
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < 5; i++)
	{
		int			nh = 0;

		hs[nh].name = "host";
		hs[nh++].value = (char *) host;
		hs[nh].name = "x-amz-date";
		hs[nh++].value = (char *) when;
		switch (i)
		{
			case 0:
				hs[nh].name = "range";
				hs[nh++].value = "bytes=0-9";
				hs[nh].name = "x-amz-content-sha256";
				hs[nh++].value = (char *) empty;
				got = authorization("GET", "/test.txt", NULL, hs, nh, empty, when, "us-east-1", key, secret);
				break;
			case 1:
				hs[nh].name = "date";
				hs[nh++].value = "Fri, 24 May 2013 00:00:00 GMT";
				hs[nh].name = "x-amz-storage-class";
				hs[nh++].value = "REDUCED_REDUNDANCY";
				hs[nh].name = "x-amz-content-sha256";
				hs[nh++].value = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
				got = authorization("PUT", "/test%24file.text", NULL, hs, nh,
									"44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
									when, "us-east-1", key, secret);
				break;
			case 2:
			case 3:
				hs[nh].name = "x-amz-content-sha256";
				hs[nh++].value = (char *) empty;
				got = authorization("GET", "/", i == 2 ? "lifecycle" : "max-keys=2&prefix=J",
									hs, nh, empty, when, "us-east-1", key, secret);
				break;
			default:
				url = presign("https://examplebucket.s3.amazonaws.com/test.txt", "GET", 86400,
							  (time_t) 1369353600, "us-east-1", key, secret, &got);
				got = url;
				break;
		}
		sig = strstr(got, "Signature=");
		sig = sig ? sig + strlen("Signature=") : "";
		values[0] = CStringGetTextDatum(v[i].name);
		values[1] = CStringGetTextDatum(v[i].expected);
		values[2] = CStringGetTextDatum(sig);
		values[3] = BoolGetDatum(strcmp(sig, v[i].expected) == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
