/* placeholder until the signer lands */
#include "hagenkit.h"
#include <curl/curl.h>
#include "http.h"

struct curl_slist *
hagen_s3_sign(struct curl_slist *headers, const char *method, const char *url, char **error)
{
	*error = pstrdup("S3 signing is not available yet");
	return headers;
}
