/*-------------------------------------------------------------------------
 *
 * http_transfer.h
 *	  Private to the HTTP executor: what its event loop (http_loop.c) needs
 *	  of one transfer (http_transfer.c).  The public interface is http.h.
 *
 * A transfer is one "http" effect carried out: its libcurl easy handle
 * (whose CURLOPT_PRIVATE is the transfer), its callbacks, the files it
 * streams from and to, and in the end its outcome.  The loop only adds
 * and removes handles, follows the transfer's decisions, and hands the
 * outcomes back in order.
 *
 * IDENTIFICATION
 *	  src/http_transfer.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HAGEN_HTTP_TRANSFER_H
#define HAGEN_HTTP_TRANSFER_H

#include <curl/curl.h>

#include "hagenkit.h"

typedef struct HagenTransfer HagenTransfer;

/*
 * Sets up the transfer of an effect, in a memory context of its own under
 * parent.  *easy is the handle to add to the multi handle, or NULL when
 * the transfer ended at once (a noop, or an effect that cannot start): its
 * outcome is then ready.
 */
extern HagenTransfer *hagen_transfer_start(MemoryContext parent, int64 job_id, int64 token,
										   Jsonb *effect, CURL **easy);

/*
 * After libcurl finished the transfer with CURLE_OK: true when the answer
 * is a redirect the effect asked to follow, and the handle has been set to
 * the next hop (checked by the guard again); it is then added again.
 */
extern bool hagen_transfer_follow(HagenTransfer *t);

/* Ends a transfer libcurl finished: files settled, outcome built, handle freed. */
extern void hagen_transfer_finish(HagenTransfer *t, CURLcode res);

/* Ends a transfer that could not go on, with an error of the given kind. */
extern void hagen_transfer_fail(HagenTransfer *t, const char *kind, const char *error);

/*
 * The outcome of an ended transfer, as JSON text palloc'd in the caller's
 * context, with its job and token; the transfer itself is freed.
 */
extern char *hagen_transfer_take_outcome(HagenTransfer *t, int64 *job_id, int64 *token);

#endif							/* HAGEN_HTTP_TRANSFER_H */
