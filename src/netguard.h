/*-------------------------------------------------------------------------
 *
 * netguard.h
 *	  The network guard: which addresses user- and provider-supplied URLs
 *	  may reach.
 *
 * IDENTIFICATION
 *	  src/netguard.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HAGEN_NETGUARD_H
#define HAGEN_NETGUARD_H

#include <sys/socket.h>

extern const char *hagen_netguard_refuses(const struct sockaddr *sa);
extern bool hagen_netguard_host_trusted(const char *url);
extern char *hagen_netguard_bad_host_entry(const char *list);

#endif							/* HAGEN_NETGUARD_H */
