/*-------------------------------------------------------------------------
 *
 * hagenkit.c
 *	  Module entry point: settings, shared memory and background workers.
 *
 * hagenkit must be in shared_preload_libraries: its workers are registered
 * at postmaster start.  hagen.dispatchers dispatchers carry out the HTTP
 * effects of the "http" lane through libcurl; hagen.compile_workers compile workers carry
 * out the "compile" lane by running the hagen-compile helper.  See
 * hagenkit.h for the glossary and DESIGN.md for the architecture.
 *
 * IDENTIFICATION
 *	  src/hagenkit.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Registers one background worker of ours. */
static void
register_worker(const char *name, const char *type, const char *function,
				int slot, int restart_s)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = restart_s;
	strlcpy(worker.bgw_library_name, "hagenkit", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	strlcpy(worker.bgw_type, type, BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(slot);
	RegisterBackgroundWorker(&worker);
}

void
_PG_init(void)
{
	int			i;

	if (IsBinaryUpgrade)
		return;
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("hagenkit must be loaded via shared_preload_libraries"),
				 errhint("Add hagenkit to shared_preload_libraries in postgresql.conf and restart the server.")));

	hagen_define_gucs();
	hagen_shmem_init();

	/* libcurl's global state, once, before any process forks off. */
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialize libcurl")));

	for (i = 0; i < hagen_dispatchers; i++)
	{
		char		name[BGW_MAXLEN];

		if (hagen_dispatchers == 1)
			snprintf(name, sizeof(name), "hagenkit dispatcher");
		else
			snprintf(name, sizeof(name), "hagenkit dispatcher %d", i + 1);
		register_worker(name, "hagenkit dispatcher", "hagen_dispatcher_main", i, 5);
	}
	for (i = 0; i < hagen_compile_workers; i++)
	{
		char		name[BGW_MAXLEN];

		snprintf(name, sizeof(name), "hagenkit compile worker %d", i + 1);
		register_worker(name, "hagenkit compile worker",
						"hagen_compile_worker_main", i, 5);
	}
}
