/*-------------------------------------------------------------------------
 *
 * compile_worker.c
 *	  A compile worker: claims jobs of the "compile" lane and carries out
 *	  their compile effects.
 *
 * IDENTIFICATION
 *	  src/compile_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "compile.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/memutils.h"

#define SAFETY_TIMER_MS 5000
#define NOT_INSTALLED_SLEEP_MS 10000

void
hagen_compile_worker_main(Datum arg)
{
	int			slot = DatumGetInt32(arg);
	MemoryContext loop_cxt;
	char		name[64];
	bool		recovered = false;

	snprintf(name, sizeof(name), "hagenkit compile worker %d", slot + 1);
	hagen_worker_start(name, HAGEN_WORKER_COMPILE, slot);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "hagenkit compile worker",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		HagenClaim *claims;
		long		next_due_ms;
		long		sleep_ms;
		int			n;

		MemoryContextSwitchTo(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		if (!recovered)
		{
			hagen_recover_jobs("compile");
			recovered = true;
		}
		n = hagen_claim_jobs("compile", 1, loop_cxt, &claims, &next_due_ms);
		if (n < 0)
		{
			recovered = false;
			sleep_ms = NOT_INSTALLED_SLEEP_MS;
		}
		else if (n == 1)
		{
			char	   *outcome;

			outcome = hagen_compile_run(claims[0].job_id, claims[0].token, claims[0].effect);
			hagen_complete_job(claims[0].job_id, claims[0].token, outcome);
			sleep_ms = 0;
		}
		else
			sleep_ms = next_due_ms < 0 ? SAFETY_TIMER_MS : Min(next_due_ms, SAFETY_TIMER_MS);
		MemoryContextReset(loop_cxt);
		if (sleep_ms > 0)
			hagen_worker_wait(sleep_ms);
	}
}
