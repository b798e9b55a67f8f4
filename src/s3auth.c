/*-------------------------------------------------------------------------
 *
 * s3auth.c
 *	  Signing of "s3" requests for the HTTP executor.
 *
 * Until the SigV4 signer lands (the storage issue), an "s3" effect fails
 * with a clear error instead of being sent unsigned.
 *
 * IDENTIFICATION
 *	  src/s3auth.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <curl/curl.h>

#include "http.h"

struct curl_slist *
hagen_s3_sign(struct curl_slist *headers, const char *method pg_attribute_unused(),
			  const char *url pg_attribute_unused(), char **error)
{
	*error = pstrdup("S3 signing is not available yet");
	return headers;
}
