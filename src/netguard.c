/*-------------------------------------------------------------------------
 *
 * netguard.c
 *	  The network guard: URLs that come from users or providers may not
 *	  reach loopback, private, link-local, CGNAT, multicast, reserved or
 *	  cloud metadata addresses, unless their host is the host of a
 *	  configured service endpoint or listed in hagen.trusted_hosts.
 *
 * The check is made on the address a connection is actually about to use
 * (libcurl's open-socket callback), after DNS resolution, so names that
 * resolve to loopback and numeric forms like 0x7f.1 or 2130706433 cannot
 * slip through.  Redirects are followed by the executor one hop at a time,
 * each hop checked again.
 *
 * IDENTIFICATION
 *	  src/netguard.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <curl/curl.h>

#include "netguard.h"
#include "nodes/pg_list.h"
#include "utils/varlena.h"

/* Is a in prefix/bits (host byte order)? */
static bool
in4(uint32 a, uint32 prefix, int bits)
{
	uint32		mask = bits == 0 ? 0 : 0xFFFFFFFFu << (32 - bits);

	return (a & mask) == (prefix & mask);
}

/* The rule that refuses an IPv4 address (host byte order), or NULL. */
static const char *
refuses_v4(uint32 a)
{
	if (in4(a, 0x7F000000, 8))
		return "loopback address";
	if (in4(a, 0xA9FEA9FE, 32))
		return "cloud metadata address";
	if (in4(a, 0xA9FE0000, 16))
		return "link-local address";
	if (in4(a, 0x0A000000, 8) || in4(a, 0xAC100000, 12) || in4(a, 0xC0A80000, 16))
		return "private address";
	if (in4(a, 0x64400000, 10))
		return "carrier-grade NAT address";
	if (in4(a, 0x00000000, 8))
		return "\"this network\" address";
	if (in4(a, 0xE0000000, 4))
		return "multicast address";
	if (in4(a, 0xF0000000, 4))
		return "reserved address";
	if (in4(a, 0xC0000000, 24) || in4(a, 0xC0000200, 24) || in4(a, 0xC6120000, 15) ||
		in4(a, 0xC6336400, 24) || in4(a, 0xCB007100, 24))
		return "special-purpose address";
	return NULL;
}

/*
 * hagen_netguard_refuses returns the rule that refuses an address, or NULL
 * when it may be reached.
 */
const char *
hagen_netguard_refuses(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
	{
		const struct sockaddr_in *s4 = (const struct sockaddr_in *) sa;

		return refuses_v4(ntohl(s4->sin_addr.s_addr));
	}
	if (sa->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) sa;
		const uint8 *b = s6->sin6_addr.s6_addr;
		static const uint8 mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
		static const uint8 nat64[12] = {0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0};
		static const uint8 zero[16] = {0};
		uint32		v4 = ((uint32) b[12] << 24) | ((uint32) b[13] << 16) |
			((uint32) b[14] << 8) | b[15];

		if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
			return b[15] == 1 ? "loopback address" : "unspecified address";
		if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 ||
			memcmp(b, zero, 12) == 0)
			return refuses_v4(v4);
		if ((b[0] & 0xFE) == 0xFC)
			return "private address";
		if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80)
			return "link-local address";
		if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0)
			return "site-local address";
		if (b[0] == 0xFF)
			return "multicast address";
		if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8)
			return "documentation address";
		if (b[0] == 0x20 && b[1] == 0x02)
			return refuses_v4(((uint32) b[2] << 24) | ((uint32) b[3] << 16) |
							  ((uint32) b[4] << 8) | b[5]);
		return NULL;
	}
	return "address family other than IPv4 and IPv6";
}

/*
 * The lower-cased host of a URL, palloc'd, or NULL; *port gets its port
 * (when it has none, the scheme's default, or 0 without default_port).
 * curl normalizes the host, so 2130706433 and 0x7f.1 come back as
 * 127.0.0.1.
 */
static char *
url_host(const char *url, int *port, bool default_port)
{
	CURLU	   *u;
	char	   *host = NULL;
	char	   *portstr = NULL;
	char	   *result = NULL;

	*port = 0;
	if (url == NULL || url[0] == '\0')
		return NULL;
	u = curl_url();
	if (u == NULL)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host)
	{
		char	   *p;

		result = pstrdup(host);
		for (p = result; *p; p++)
			*p = pg_tolower((unsigned char) *p);
		curl_free(host);
		if (curl_url_get(u, CURLUPART_PORT, &portstr,
						 default_port ? CURLU_DEFAULT_PORT : 0) == CURLUE_OK && portstr)
		{
			*port = atoi(portstr);
			curl_free(portstr);
		}
	}
	curl_url_cleanup(u);
	return result;
}

/*
 * Reads one entry of hagen.trusted_hosts: "host" (any port), "host:port"
 * or "[IPv6]:port", with libcurl's URL parser, the one that reads the URLs
 * it is compared with (so "LOCALHOST" and "127.1" mean there what they
 * mean in a URL).  Returns the host, lower-cased, and *port (0: any), or
 * NULL when the entry is not a host with an optional port.
 */
static char *
entry_host(const char *entry, int *port)
{
	*port = 0;
	if (entry[0] == '\0' || strpbrk(entry, "/?#@\\ \t") != NULL)
		return NULL;
	return url_host(psprintf("http://%s/", entry), port, false);
}

/*
 * hagen_netguard_bad_host_entry: the first entry of a hagen.trusted_hosts
 * value (comma-separated, as PostgreSQL splits list settings) that is not
 * a host with an optional port, or NULL when all are.
 */
char *
hagen_netguard_bad_host_entry(const char *list)
{
	List	   *entries = NIL;
	ListCell   *lc;
	int			port;

	if (list == NULL || list[0] == '\0')
		return NULL;
	if (!SplitGUCList(pstrdup(list), ',', &entries))
		return pstrdup(list);
	foreach(lc, entries)
	{
		char	   *entry = (char *) lfirst(lc);

		if (entry_host(entry, &port) == NULL)
			return entry;
	}
	return NULL;
}

/* Does host:port match an entry of a hagen.trusted_hosts list? */
static bool
host_listed(const char *host, int port, const char *list)
{
	List	   *entries = NIL;
	ListCell   *lc;

	if (!SplitGUCList(pstrdup(list), ',', &entries))
		return false;
	foreach(lc, entries)
	{
		int			eport;
		char	   *ehost = entry_host((char *) lfirst(lc), &eport);

		if (ehost && strcmp(ehost, host) == 0 && (eport == 0 || eport == port))
			return true;
	}
	return false;
}

/*
 * hagen_netguard_host_trusted: is the URL's host and port those of a
 * configured service endpoint, or listed in hagen.trusted_hosts?  The port
 * counts: trusting the storage server must not open every other service
 * on its machine.
 */
bool
hagen_netguard_host_trusted(const char *url)
{
	const char *endpoints[5];
	int			port;
	char	   *host = url_host(url, &port, true);
	bool		trusted = false;
	int			i;

	if (host == NULL)
		return false;
	endpoints[0] = hagen_fal_queue_url;
	endpoints[1] = hagen_fal_rest_url;
	endpoints[2] = hagen_xai_url;
	endpoints[3] = hagen_s3_endpoint;
	endpoints[4] = hagen_public_url;
	for (i = 0; i < 5 && !trusted; i++)
	{
		int			eport;
		char	   *eh = url_host(endpoints[i], &eport, true);

		if (eh && strcmp(eh, host) == 0 && eport == port)
			trusted = true;
		if (eh)
			pfree(eh);
	}
	if (!trusted && hagen_trusted_hosts)
		trusted = host_listed(host, port, hagen_trusted_hosts);
	pfree(host);
	return trusted;
}
