/*-------------------------------------------------------------------------
 *
 * url_check.c
 *	  hagen._url_refusal(url): why a URL given by a user can never be
 *	  fetched, judged when it is stored rather than when a job fetches it.
 *
 * Only what the URL itself says is judged: its scheme, and a host that is
 * an address (in any spelling libcurl accepts: 2130706433, 0x7f.1 and
 * 127.1 are 127.0.0.1) or a name that always means this machine or the
 * cloud metadata service.  The address rules are the network guard's
 * (netguard.c), and so are its exceptions: the hosts of the configured
 * service endpoints and of hagen.trusted_hosts.  A name that resolves to a
 * refused address is still caught by the guard at fetch time.
 *
 * IDENTIFICATION
 *	  src/url_check.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <curl/curl.h>

#include "utils/builtins.h"

#include "netguard.h"

PG_FUNCTION_INFO_V1(hagen_url_refusal);

/* Does name end with ".suffix" or equal it (both lower case)? */
static bool
name_is_or_under(const char *name, const char *suffix)
{
	size_t		n = strlen(name);
	size_t		s = strlen(suffix);

	if (n == s)
		return strcmp(name, suffix) == 0;
	return n > s && name[n - s - 1] == '.' && strcmp(name + n - s, suffix) == 0;
}

/*
 * The reason a URL can never be fetched, or NULL.  host is what libcurl
 * makes of the URL's host (numeric IPv4 forms normalized, IPv6 in
 * brackets), lower-cased.
 */
static const char *
refusal(const char *url, char *scheme, char *host)
{
	char	   *p;
	size_t		len;
	struct sockaddr_in s4;
	struct sockaddr_in6 s6;
	const char *rule = NULL;

	if (pg_strcasecmp(scheme, "http") != 0 && pg_strcasecmp(scheme, "https") != 0)
		return "only http and https URLs are fetched";
	for (p = host; *p; p++)
		*p = pg_tolower((unsigned char) *p);
	len = strlen(host);
	while (len > 0 && host[len - 1] == '.')	/* "localhost." is localhost */
		host[--len] = '\0';

	memset(&s4, 0, sizeof(s4));
	memset(&s6, 0, sizeof(s6));
	if (inet_pton(AF_INET, host, &s4.sin_addr) == 1)
	{
		s4.sin_family = AF_INET;
		rule = hagen_netguard_refuses((struct sockaddr *) &s4);
	}
	else if (len > 2 && host[0] == '[' && host[len - 1] == ']')
	{
		char	   *inner = pnstrdup(host + 1, len - 2);
		char	   *zone = strchr(inner, '%');

		if (zone)
			*zone = '\0';
		if (inet_pton(AF_INET6, inner, &s6.sin6_addr) == 1)
		{
			s6.sin6_family = AF_INET6;
			rule = hagen_netguard_refuses((struct sockaddr *) &s6);
		}
		pfree(inner);
	}
	else if (name_is_or_under(host, "localhost"))
		rule = "loopback address";
	else if (strcmp(host, "metadata.google.internal") == 0 || strcmp(host, "metadata") == 0)
		rule = "cloud metadata address";

	if (rule && !hagen_netguard_host_trusted(url))
		return rule;
	return NULL;
}

/*
 * hagen._url_refusal(text) returns why the URL can never be fetched ("not a
 * URL", "only http and https URLs are fetched", "loopback address", "cloud
 * metadata address", "private address", ...) or NULL when it may be.
 */
Datum
hagen_url_refusal(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CURLU	   *u = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	const char *why = "not a URL";
	char	   *result = NULL;

	if (u == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	PG_TRY();
	{
		if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
			curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK && scheme &&
			curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host)
		{
			char	   *h = pstrdup(host);

			why = refusal(url, scheme, h);
		}
		if (why)
			result = pstrdup(why);
	}
	PG_FINALLY();
	{
		if (scheme)
			curl_free(scheme);
		if (host)
			curl_free(host);
		curl_url_cleanup(u);
	}
	PG_END_TRY();
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}
