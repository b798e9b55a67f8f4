/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  What every hagenkit background worker does the same way: signals,
 *	  connecting, waiting on its latch, reloading its configuration.
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

/*
 * hagen_worker_start sets a worker up: SIGHUP reloads the configuration,
 * SIGTERM ends the worker at its next CHECK_FOR_INTERRUPTS (in-flight work
 * is left leased and taken up again when the worker starts anew), then it
 * connects to hagen.database and publishes its latch.
 */
void
hagen_worker_start(const char *name, HagenWorkerKind kind, int slot)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(hagen_database, NULL, 0);
	pgstat_report_appname(name);
	hagen_worker_attach(kind, slot);
	ereport(LOG,
			(errmsg("%s started in database \"%s\"", name, hagen_database)));
}

/*
 * hagen_worker_wait sleeps until the latch is set or the timeout passes,
 * then handles interrupts and configuration reloads.  Returns true when it
 * was woken by the latch.
 */
bool
hagen_worker_wait(long timeout_ms)
{
	int			rc;

	rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				   timeout_ms < 0 ? 0 : timeout_ms, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	return (rc & WL_LATCH_SET) != 0;
}
