/*-------------------------------------------------------------------------
 *
 * http_loop.c
 *	  The HTTP executor's event loop: every "http" effect runs through one
 *	  libcurl multi handle, up to hagen.max_inflight at once, new work
 *	  admitted as soon as transfers finish.
 *
 * The dispatcher waits on one WaitEventSet holding its latch, postmaster
 * death and curl's sockets, so new jobs, SIGTERM and SIGHUP interrupt HTTP
 * waits; libcurl's timer bounds the wait.  Finished transfers are queued,
 * in the order they ended, until the dispatcher takes their outcomes.
 * What one transfer does (its setup, callbacks and outcome) is in
 * http_transfer.c.
 *
 * IDENTIFICATION
 *	  src/http_loop.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "http.h"
#include "http_transfer.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define MAX_SOCKS 4096

struct HagenHttp
{
	MemoryContext cxt;
	CURLM	   *multi;
	int			nsocks;
	curl_socket_t sock_fd[MAX_SOCKS];
	int			sock_what[MAX_SOCKS];
	bool		socks_changed;
	bool		timer_set;
	TimestampTz timer_at;
	WaitEventSet *wes;
	int			inflight;
	List	   *done;			/* ended transfers, oldest first */
};

/* ---- libcurl callbacks (must never ereport) ---- */

static int
socket_cb(CURL *easy pg_attribute_unused(), curl_socket_t s, int what, void *userp,
		  void *socketp pg_attribute_unused())
{
	HagenHttp  *h = (HagenHttp *) userp;
	int			i;

	for (i = 0; i < h->nsocks; i++)
		if (h->sock_fd[i] == s)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < h->nsocks)
		{
			h->sock_fd[i] = h->sock_fd[h->nsocks - 1];
			h->sock_what[i] = h->sock_what[h->nsocks - 1];
			h->nsocks--;
		}
	}
	else if (i < h->nsocks)
		h->sock_what[i] = what;
	else if (h->nsocks < MAX_SOCKS)
	{
		h->sock_fd[h->nsocks] = s;
		h->sock_what[h->nsocks] = what;
		h->nsocks++;
	}
	h->socks_changed = true;
	return 0;
}

static int
timer_cb(CURLM *multi pg_attribute_unused(), long timeout_ms, void *userp)
{
	HagenHttp  *h = (HagenHttp *) userp;

	h->timer_set = timeout_ms >= 0;
	if (h->timer_set)
		h->timer_at = GetCurrentTimestamp() + (TimestampTz) timeout_ms * 1000;
	return 0;
}

/* Queues an ended transfer for hagen_http_next_done. */
static void
queue_done(HagenHttp *h, HagenTransfer *t)
{
	MemoryContext old = MemoryContextSwitchTo(h->cxt);

	h->done = lappend(h->done, t);
	MemoryContextSwitchTo(old);
}

/*
 * hagen_http_start begins carrying out an effect for a claimed job.  An
 * effect that cannot start is done at once, with an error outcome.
 */
void
hagen_http_start(HagenHttp *h, int64 job_id, int64 token, Jsonb *effect)
{
	CURL	   *easy;
	HagenTransfer *t = hagen_transfer_start(h->cxt, job_id, token, effect, &easy);

	if (easy && curl_multi_add_handle(h->multi, easy) != CURLM_OK)
	{
		hagen_transfer_fail(t, "transport", "could not add the transfer to libcurl");
		easy = NULL;
	}
	if (easy)
		h->inflight++;
	else
		queue_done(h, t);
}

/*
 * Moves every transfer libcurl has finished to the done list; a redirect
 * the transfer follows goes on the wire again instead.
 */
static void
collect_done(HagenHttp *h)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(h->multi, &left)) != NULL)
	{
		CURL	   *easy = msg->easy_handle;
		CURLcode	res = msg->data.result;
		HagenTransfer *t;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &t);
		curl_multi_remove_handle(h->multi, easy);
		if (res == CURLE_OK && hagen_transfer_follow(t) &&
			curl_multi_add_handle(h->multi, easy) == CURLM_OK)
			continue;
		h->inflight--;
		hagen_transfer_finish(t, res);
		queue_done(h, t);
	}
}

/* ---- the executor ---- */

/* hagen_http_create makes an executor whose memory lives in cxt. */
HagenHttp *
hagen_http_create(MemoryContext cxt)
{
	HagenHttp  *h = MemoryContextAllocZero(cxt, sizeof(HagenHttp));

	h->cxt = cxt;
	h->done = NIL;
	h->multi = curl_multi_init();
	if (h->multi == NULL)
		elog(ERROR, "could not create a libcurl multi handle");
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
	h->socks_changed = true;
	return h;
}

/* hagen_http_inflight: transfers under way. */
int
hagen_http_inflight(HagenHttp *h)
{
	return h->inflight;
}

/* Rebuilds the wait set: the latch, postmaster death and curl's sockets. */
static void
rebuild_wait_set(HagenHttp *h)
{
	int			i;

	if (h->wes)
		FreeWaitEventSet(h->wes);
	h->wes = CreateWaitEventSet(h->cxt, h->nsocks + 2);
	AddWaitEventToSet(h->wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(h->wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < h->nsocks; i++)
	{
		uint32		ev = 0;

		if (h->sock_what[i] & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (h->sock_what[i] & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		if (ev)
			AddWaitEventToSet(h->wes, ev, h->sock_fd[i], NULL, NULL);
	}
	h->socks_changed = false;
}

/*
 * hagen_http_wait waits for the latch, socket activity or the timeout,
 * drives the transfers that are ready, and handles interrupts.  Returns
 * true when the latch woke it.
 */
bool
hagen_http_wait(HagenHttp *h, long timeout_ms)
{
	WaitEvent	events[64];
	int			n;
	int			i;
	int			running;
	bool		woken = false;

	if (h->socks_changed || h->wes == NULL)
		rebuild_wait_set(h);
	if (h->timer_set)
	{
		long		t = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), h->timer_at);

		if (timeout_ms < 0 || t < timeout_ms)
			timeout_ms = t;
	}
	if (h->done != NIL)
		timeout_ms = 0;

	n = WaitEventSetWait(h->wes, timeout_ms, events, lengthof(events), PG_WAIT_EXTENSION);
	for (i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			woken = true;
		}
		else if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			int			mask = 0;

			if (events[i].events & WL_SOCKET_READABLE)
				mask |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				mask |= CURL_CSELECT_OUT;
			curl_multi_socket_action(h->multi, events[i].fd, mask, &running);
		}
	}
	if (h->timer_set && GetCurrentTimestamp() >= h->timer_at)
	{
		h->timer_set = false;
		curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	collect_done(h);

	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	return woken;
}

/*
 * hagen_http_next_done pops one finished transfer.  The outcome is
 * palloc'd in the caller's context; the transfer's own memory is freed.
 */
bool
hagen_http_next_done(HagenHttp *h, int64 *job_id, int64 *token, char **outcome_json)
{
	HagenTransfer *t;

	if (h->done == NIL)
		return false;
	t = (HagenTransfer *) linitial(h->done);
	h->done = list_delete_first(h->done);
	*outcome_json = hagen_transfer_take_outcome(t, job_id, token);
	return true;
}
