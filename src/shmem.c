/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared state of the hagenkit workers, and waking them at commit.
 *
 * Each worker publishes its latch here when it starts.  A transaction that
 * queues work calls hagen._wake() (a trigger on hagen.job does it), which
 * registers a transaction callback; at commit, and only at commit, the
 * callback sets every worker's latch, so new work starts within
 * milliseconds while an aborted transaction wakes nobody.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"

typedef struct HagenShared
{
	slock_t		mutex;
	Latch	   *dispatcher_latch;
	Latch	   *compile_latch[HAGEN_MAX_COMPILE_WORKERS];
} HagenShared;

static HagenShared *shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_pending = false;
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

/* Clears a worker's latch from shared memory when it exits. */
static void
worker_detach(int code pg_attribute_unused(), Datum arg)
{
	int			v = DatumGetInt32(arg);

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	if (v < 0)
		shared->dispatcher_latch = NULL;
	else
		shared->compile_latch[v] = NULL;
	SpinLockRelease(&shared->mutex);
}

/* hagen_worker_attach publishes the calling worker's latch. */
void
hagen_worker_attach(HagenWorkerKind kind, int slot)
{
	if (shared == NULL)
		elog(ERROR, "hagenkit shared memory is not initialized");
	SpinLockAcquire(&shared->mutex);
	if (kind == HAGEN_WORKER_DISPATCHER)
		shared->dispatcher_latch = MyLatch;
	else
		shared->compile_latch[slot] = MyLatch;
	SpinLockRelease(&shared->mutex);
	before_shmem_exit(worker_detach,
					  Int32GetDatum(kind == HAGEN_WORKER_DISPATCHER ? -1 : slot));
}

/* hagen_wake_all sets the latch of every running worker. */
void
hagen_wake_all(void)
{
	Latch	   *latches[HAGEN_MAX_COMPILE_WORKERS + 1];
	int			n = 0;
	int			i;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	if (shared->dispatcher_latch)
		latches[n++] = shared->dispatcher_latch;
	for (i = 0; i < HAGEN_MAX_COMPILE_WORKERS; i++)
		if (shared->compile_latch[i])
			latches[n++] = shared->compile_latch[i];
	SpinLockRelease(&shared->mutex);
	for (i = 0; i < n; i++)
		SetLatch(latches[i]);
}

static void
wake_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
				hagen_wake_all();
			wake_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
			break;
		default:
			break;
	}
}

PG_FUNCTION_INFO_V1(hagen_wake);

/*
 * hagen._wake(): wake the workers when the calling transaction commits.
 */
Datum
hagen_wake(PG_FUNCTION_ARGS)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_pending = true;
	PG_RETURN_VOID();
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
