/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *	  The dispatcher: claims due jobs of the "http" lane, carries their
 *	  effects out through the HTTP executor, and hands the outcomes back.
 *
 * It admits new work whenever a slot is free (up to hagen.max_inflight
 * transfers, counted over all dispatchers), sleeps on one wait set holding
 * its latch and the transfers' sockets, and is woken at commit by a
 * transaction that queues http work falling due before it would look
 * again (shmem.c).  The next due time SQL reports (polls, back-offs) bounds
 * the sleep; a slow safety timer covers everything else.  No transaction
 * is ever open while a request is on the wire.
 *
 * IDENTIFICATION
 *	  src/dispatcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "http.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define SAFETY_TIMER_MS 5000
#define MAX_BATCH 128
#define PURGE_INTERVAL_MS (3600 * 1000)
#define STARVED_RETRY_MS 20

typedef struct Outcome
{
	int64		job_id;
	int64		token;
	char	   *json;
} Outcome;

/*
 * Takes up to MAX_BATCH finished transfers' outcomes into batch; returns how
 * many, and the JSON array hagen.complete_jobs() takes (NULL when none).
 */
static char *
take_outcomes(HagenHttp *h, Outcome *batch, int *n)
{
	StringInfoData buf;
	HagenJson	w;
	int			i;

	*n = 0;
	while (*n < MAX_BATCH &&
		   hagen_http_next_done(h, &batch[*n].job_id, &batch[*n].token, &batch[*n].json))
		(*n)++;
	if (*n == 0)
		return NULL;
	initStringInfo(&buf);
	hagen_json_init(&w, &buf);
	hagen_json_array_start(&w, NULL);
	for (i = 0; i < *n; i++)
	{
		hagen_json_object_start(&w, NULL);
		hagen_json_int(&w, "job_id", batch[i].job_id);
		hagen_json_int(&w, "token", batch[i].token);
		hagen_json_raw(&w, "outcome", batch[i].json);
		hagen_json_object_end(&w);
	}
	hagen_json_array_end(&w);
	return buf.data;
}

/*
 * Hands a batch of outcomes back on its own, when handing it back with a
 * claim failed: in one transaction, else one by one (each failed alone).
 */
static void
report_apart(Outcome *batch, int n, const char *json)
{
	int			i;

	if (n > 1 && hagen_complete_jobs(json))
		return;
	for (i = 0; i < n; i++)
		hagen_complete_job(batch[i].job_id, batch[i].token, batch[i].json);
}

#define NOT_INSTALLED_SLEEP_MS 10000

/*
 * hagen_dispatcher_main: dispatcher number arg (0-based) of
 * hagen.dispatchers.  They share the http lane: claims are disjoint (SKIP
 * LOCKED), hagen.max_inflight is reserved in shared memory before each
 * claim, and only the first one purges old history.
 */
void
hagen_dispatcher_main(Datum arg)
{
	int			slot = DatumGetInt32(arg);
	MemoryContext cxt;
	MemoryContext loop_cxt;
	HagenHttp  *h;
	bool		recovered = false;
	TimestampTz claim_at = 0;	/* when to claim next; 0: now */
	TimestampTz last_purge = 0;
	char		name[BGW_MAXLEN];

	if (hagen_dispatchers == 1)
		snprintf(name, sizeof(name), "hagenkit dispatcher");
	else
		snprintf(name, sizeof(name), "hagenkit dispatcher %d", slot + 1);
	hagen_worker_start(name, HAGEN_WORKER_DISPATCHER, slot);
	cxt = AllocSetContextCreate(TopMemoryContext, "hagenkit dispatcher",
								ALLOCSET_DEFAULT_SIZES);
	loop_cxt = AllocSetContextCreate(cxt, "hagenkit dispatcher loop",
									 ALLOCSET_DEFAULT_SIZES);
	h = hagen_http_create(cxt);

	for (;;)
	{
		Outcome		batch[MAX_BATCH];
		int			n_out;
		char	   *outcomes;
		int			free_slots = -1;
		long		timeout_ms;
		TimestampTz now;

		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();

		/* Outcomes of finished transfers: their slots are free now. */
		outcomes = take_outcomes(h, batch, &n_out);
		hagen_inflight_set(hagen_http_inflight(h));

		if (!recovered)
		{
			hagen_recover_jobs("http");
			recovered = true;
		}
		if (slot == 0 &&
			TimestampDifferenceExceeds(last_purge, GetCurrentTimestamp(), PURGE_INTERVAL_MS))
		{
			hagen_purge_history();
			last_purge = GetCurrentTimestamp();
		}

		now = GetCurrentTimestamp();
		if (now >= claim_at && hagen_http_inflight(h) < hagen_max_inflight)
		{
			free_slots = hagen_inflight_reserve(hagen_http_inflight(h),
												hagen_max_inflight - hagen_http_inflight(h));
			/* The other dispatchers fill hagen.max_inflight: look again soon. */
			if (free_slots == 0)
				claim_at = TimestampTzPlusMilliseconds(now, STARVED_RETRY_MS);
		}

		/* Claims and outcomes together, in one transaction. */
		if (free_slots > 0 || n_out > 0)
		{
			HagenClaim *claims = NULL;
			long		next_due_ms = -1;
			int			n;
			int			i;

			if (free_slots > 0)
				hagen_lane_reading();
			n = hagen_exchange(outcomes, "http", Max(free_slots, 0), loop_cxt, &claims, &next_due_ms);
			if (n == -2)
			{
				/* Failed as a whole: the outcomes first, then the claim, apart. */
				if (n_out > 0)
					report_apart(batch, n_out, outcomes);
				n = free_slots > 0 ?
					hagen_claim_jobs("http", free_slots, loop_cxt, &claims, &next_due_ms) : 0;
			}
			if (n < 0)
			{
				/* Not installed here (yet), or the claim failed: try later. */
				recovered = false;
				claim_at = TimestampTzPlusMilliseconds(now, NOT_INSTALLED_SLEEP_MS);
			}
			else if (free_slots > 0)
			{
				for (i = 0; i < n; i++)
				{
					pgstat_report_activity(STATE_RUNNING, "starting hagenkit transfers");
					hagen_http_start(h, claims[i].job_id, claims[i].token, claims[i].effect);
				}
				if (n == free_slots)
					claim_at = 0;	/* there may be more due already */
				else if (next_due_ms < 0)
					claim_at = TimestampTzPlusMilliseconds(now, SAFETY_TIMER_MS);
				else
					claim_at = TimestampTzPlusMilliseconds(now, Min(next_due_ms, SAFETY_TIMER_MS));
				pgstat_report_activity(STATE_IDLE, NULL);
			}
			/* What was reserved and not used is given back. */
			hagen_inflight_set(hagen_http_inflight(h));
		}
		for (int i = 0; i < n_out; i++)
			pfree(batch[i].json);

		/*
		 * Sleep until the next claim, or until transfers move.  Work
		 * committed meanwhile (by anyone, outcomes of our own included)
		 * that falls due earlier brings the claim forward; it sets our latch
		 * only while we sleep with room for more requests.  When
		 * hagen.max_inflight is full, a finished transfer is what frees a
		 * slot.  A full batch of outcomes means more may be waiting.
		 */
		if (hagen_http_inflight(h) < hagen_max_inflight)
		{
			claim_at = hagen_lane_sleep(claim_at, free_slots != 0);
			timeout_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), claim_at);
		}
		else
		{
			hagen_lane_sleep(DT_NOEND, false);
			timeout_ms = SAFETY_TIMER_MS;
		}
		if (n_out == MAX_BATCH)
			timeout_ms = 0;
		MemoryContextReset(loop_cxt);

		(void) hagen_http_wait(h, timeout_ms);
		hagen_lane_awake();
	}
}
