/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state of the hagenkit workers: waking them at commit, by lane,
 *	  only when they have work; the server-wide limit on HTTP requests in
 *	  flight.
 *
 * Every worker has a slot here, holding its latch and its lane ("http" for
 * the dispatchers, "compile" for the compile workers).  A row trigger on
 * hagen.job notes, for each lane, the earliest time a job of the
 * transaction falls due (hagen._wake() notes "now" for every lane), and a
 * transaction callback acts on it at commit, and only at commit: an
 * aborted transaction wakes nobody.
 *
 * Waking is by lane and by time.  A worker publishes, before it sleeps,
 * when it will read its lane's queue again (wake_at: the next due time SQL
 * reported, or its safety timer); a commit sets its latch only if the work
 * it queued falls due before that.  Work committed while a worker is awake
 * is noted in its slot (pending) and shortens its next sleep.  So a poll
 * queued two seconds ahead wakes no one, a compile job wakes no
 * dispatcher, an http job no compile worker, and a busy compile worker is
 * never disturbed.  The protocol cannot lose a wake-up: a worker forgets
 * its pending time before it takes the snapshot that reads its queue, and
 * the callback runs after the committed work is visible to new snapshots.
 *
 * hagen.max_inflight bounds the requests in flight of all dispatchers
 * together: each dispatcher reserves slots before it claims jobs and
 * publishes its count (never below what it really has in flight), and the
 * sum over dispatchers never exceeds the limit.  A dispatcher that exits
 * clears its slot.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#define MAX_SLOTS (HAGEN_MAX_DISPATCHERS + HAGEN_MAX_COMPILE_WORKERS)

typedef struct WorkerSlot
{
	Latch	   *latch;			/* NULL: no worker in this slot */
	HagenLane	lane;
	bool		sleeping;		/* waiting for work (not busy, not full) */
	TimestampTz wake_at;		/* when it reads its queue again, if sleeping */
	TimestampTz pending;		/* earliest due time committed since it last read */
	int			inflight;		/* dispatchers: requests in flight or reserved */
} WorkerSlot;

typedef struct HagenShared
{
	slock_t		mutex;
	WorkerSlot	slots[MAX_SLOTS];
} HagenShared;

static HagenShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static WorkerSlot *my_slot = NULL;

/* What the current transaction queued, by lane: the earliest due time. */
static bool wake_pending[HAGEN_LANES];
static TimestampTz wake_due[HAGEN_LANES];
static bool xact_callback_registered = false;

static void
hagen_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(HagenShared)));
}

static void
hagen_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("hagenkit", sizeof(HagenShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(HagenShared));
		SpinLockInit(&shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* hagen_shmem_init installs the hooks; called from _PG_init when preloaded. */
void
hagen_shmem_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = hagen_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = hagen_shmem_startup;
}

/* Clears a worker's slot when it exits (its reserved requests with it). */
static void
worker_detach(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	if (shared == NULL || my_slot == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	memset(my_slot, 0, sizeof(WorkerSlot));
	SpinLockRelease(&shared->mutex);
	my_slot = NULL;
}

/*
 * hagen_worker_attach publishes the calling worker's latch in its slot:
 * dispatcher number slot (0-based), or compile worker number slot.
 */
void
hagen_worker_attach(HagenWorkerKind kind, int slot)
{
	int			i = (kind == HAGEN_WORKER_DISPATCHER) ? slot : HAGEN_MAX_DISPATCHERS + slot;

	if (shared == NULL)
		elog(ERROR, "hagenkit shared memory is not initialized");
	if (slot < 0 || i >= MAX_SLOTS)
		elog(ERROR, "hagenkit worker slot %d is out of range", slot);
	SpinLockAcquire(&shared->mutex);
	my_slot = &shared->slots[i];
	memset(my_slot, 0, sizeof(WorkerSlot));
	my_slot->lane = (kind == HAGEN_WORKER_DISPATCHER) ? HAGEN_LANE_HTTP : HAGEN_LANE_COMPILE;
	my_slot->pending = DT_NOEND;
	my_slot->wake_at = DT_NOEND;
	my_slot->latch = MyLatch;
	SpinLockRelease(&shared->mutex);
	before_shmem_exit(worker_detach, (Datum) 0);
}

/*
 * hagen_lane_reading: the calling worker is about to read its lane's queue
 * (claim, next due time).  What was committed before now is in what it
 * reads, so the due times noted so far are forgotten.
 */
void
hagen_lane_reading(void)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	my_slot->pending = DT_NOEND;
	my_slot->sleeping = false;
	SpinLockRelease(&shared->mutex);
}

/*
 * hagen_lane_sleep: the calling worker goes to sleep and would read its
 * queue again at wake_at (DT_NOEND: only when woken); with want_work false
 * (a dispatcher whose requests fill hagen.max_inflight) it is not to be
 * woken for new work at all.  Returns when it must read its queue: wake_at,
 * or earlier when work committed since it last read falls due before.
 */
TimestampTz
hagen_lane_sleep(TimestampTz wake_at, bool want_work)
{
	if (my_slot == NULL)
		return wake_at;
	SpinLockAcquire(&shared->mutex);
	if (my_slot->pending < wake_at)
		wake_at = my_slot->pending;
	my_slot->wake_at = wake_at;
	my_slot->sleeping = want_work;
	SpinLockRelease(&shared->mutex);
	return wake_at;
}

/*
 * hagen_lane_awake: the calling worker woke up (its latch, a socket, its
 * timer): it is not to be woken until it sleeps again.
 */
void
hagen_lane_awake(void)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	my_slot->sleeping = false;
	SpinLockRelease(&shared->mutex);
}

/*
 * Wakes the workers of a lane for work due at due: notes it in every slot
 * of the lane, and sets the latch of those asleep until later than that.
 */
static void
wake_lane(HagenLane lane, TimestampTz due)
{
	Latch	   *latches[MAX_SLOTS];
	int			n = 0;
	int			i;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	for (i = 0; i < MAX_SLOTS; i++)
	{
		WorkerSlot *w = &shared->slots[i];

		if (w->latch == NULL || w->lane != lane)
			continue;
		if (due < w->pending)
			w->pending = due;
		if (w->sleeping && due < w->wake_at)
		{
			w->wake_at = due;
			latches[n++] = w->latch;
		}
	}
	SpinLockRelease(&shared->mutex);
	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/* hagen_wake_all wakes every worker of every lane, for work due now. */
void
hagen_wake_all(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			lane;

	for (lane = 0; lane < HAGEN_LANES; lane++)
		wake_lane((HagenLane) lane, now);
}

static void
wake_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	int			lane;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			for (lane = 0; lane < HAGEN_LANES; lane++)
				if (wake_pending[lane])
					wake_lane((HagenLane) lane, wake_due[lane]);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			for (lane = 0; lane < HAGEN_LANES; lane++)
				wake_pending[lane] = false;
			break;
		default:
			break;
	}
}

/* Notes that the current transaction queued work of a lane due at due. */
static void
note_work(HagenLane lane, TimestampTz due)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		xact_callback_registered = true;
	}
	if (!wake_pending[lane] || due < wake_due[lane])
		wake_due[lane] = due;
	wake_pending[lane] = true;
}

PG_FUNCTION_INFO_V1(hagen_wake);

/*
 * hagen._wake(): wake the workers of every lane when the calling
 * transaction commits.
 */
Datum
hagen_wake(PG_FUNCTION_ARGS)
{
	int			lane;

	for (lane = 0; lane < HAGEN_LANES; lane++)
		note_work((HagenLane) lane, GetCurrentTimestamp());
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(hagen_wake_trigger);

/*
 * hagen._wake_trigger(): a row trigger on hagen.job (for rows that are
 * queued) noting the job's lane and due time, so that the commit wakes the
 * workers of that lane that would otherwise sleep past it.
 */
Datum
hagen_wake_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	static Oid	cached_rel = InvalidOid;
	static int	att_lane;
	static int	att_run_at;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	HagenLane	lane = HAGEN_LANE_HTTP;
	TimestampTz due;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("hagen._wake_trigger() must be called as a row trigger")));
	desc = RelationGetDescr(td->tg_relation);
	if (RelationGetRelid(td->tg_relation) != cached_rel)
	{
		att_lane = SPI_fnumber(desc, "lane");
		att_run_at = SPI_fnumber(desc, "run_at");
		if (att_lane <= 0 || att_run_at <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("hagen._wake_trigger() needs columns \"lane\" and \"run_at\" in table \"%s\"",
							RelationGetRelationName(td->tg_relation))));
		cached_rel = RelationGetRelid(td->tg_relation);
	}
	tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;

	d = heap_getattr(tuple, att_lane, desc, &isnull);
	if (!isnull && strcmp(TextDatumGetCString(d), "compile") == 0)
		lane = HAGEN_LANE_COMPILE;
	d = heap_getattr(tuple, att_run_at, desc, &isnull);
	due = isnull ? GetCurrentTimestamp() : DatumGetTimestampTz(d);
	note_work(lane, due);

	return PointerGetDatum(tuple);
}

/*
 * hagen_inflight_reserve: the calling dispatcher has have requests in
 * flight and would start up to want more.  Returns how many it may start
 * (0 when the dispatchers together already fill hagen.max_inflight), and
 * counts them as in flight until hagen_inflight_set gives the true count.
 */
int
hagen_inflight_reserve(int have, int want)
{
	int			total = 0;
	int			grant;
	int			i;

	if (my_slot == NULL)
		return Max(0, Min(want, hagen_max_inflight - have));
	SpinLockAcquire(&shared->mutex);
	my_slot->inflight = have;
	for (i = 0; i < HAGEN_MAX_DISPATCHERS; i++)
		if (shared->slots[i].latch != NULL)
			total += shared->slots[i].inflight;
	grant = Max(0, Min(want, hagen_max_inflight - total));
	my_slot->inflight += grant;
	SpinLockRelease(&shared->mutex);
	return grant;
}

/* hagen_inflight_set: the calling dispatcher has n requests in flight. */
void
hagen_inflight_set(int n)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	my_slot->inflight = n;
	SpinLockRelease(&shared->mutex);
}

PG_FUNCTION_INFO_V1(hagen_provider_configured);

/*
 * hagen.provider_configured(provider): whether credentials are set, without
 * revealing them.
 */
Datum
hagen_provider_configured(PG_FUNCTION_ARGS)
{
	char	   *provider = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strcmp(provider, "fal") == 0)
		PG_RETURN_BOOL(hagen_secret(HAGEN_SECRET_FAL_KEY)[0] != '\0');
	if (strcmp(provider, "xai") == 0)
		PG_RETURN_BOOL(hagen_secret(HAGEN_SECRET_XAI_KEY)[0] != '\0');
	if (strcmp(provider, "s3") == 0)
		PG_RETURN_BOOL(hagen_secret(HAGEN_SECRET_S3_ACCESS_KEY_ID)[0] != '\0' &&
					   hagen_secret(HAGEN_SECRET_S3_SECRET_ACCESS_KEY)[0] != '\0');
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown provider \"%s\"", provider),
			 errhint("Use one of: fal, xai, s3.")));
	PG_RETURN_NULL();
}
