/*-------------------------------------------------------------------------
 *
 * jobs.c
 *	  The SQL side of the effect protocol, seen from a worker: claim due
 *	  jobs, hand back outcomes, recover jobs at start, heartbeat.
 *
 * Each call is one short transaction of its own; none is ever open while
 * an effect is carried out.  An error in SQL is caught, logged and rolled
 * back: a failing job must not take the worker down with it.
 *
 * IDENTIFICATION
 *	  src/jobs.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

typedef void (*XactBody) (void *arg);

/* A statement of the protocol, prepared once per worker and kept. */
typedef struct ProtocolQuery
{
	const char *sql;
	int			nargs;
	Oid			types[3];
	SPIPlanPtr	plan;
} ProtocolQuery;

static ProtocolQuery q_claim = {"SELECT job_id, token, effect FROM hagen.claim_jobs($1, $2)", 2, {TEXTOID, INT4OID}, NULL};
static ProtocolQuery q_next_due = {"SELECT hagen.next_due($1)", 1, {TEXTOID}, NULL};
static ProtocolQuery q_complete = {"SELECT hagen.complete_job($1, $2, $3::jsonb)", 3, {INT8OID, INT8OID, TEXTOID}, NULL};
static ProtocolQuery q_complete_many = {"SELECT hagen.complete_jobs($1::jsonb)", 1, {TEXTOID}, NULL};
static ProtocolQuery q_fail = {"SELECT hagen.fail_job($1, $2, $3)", 3, {INT8OID, INT8OID, TEXTOID}, NULL};
static ProtocolQuery q_recover = {"SELECT hagen.recover_jobs($1)", 1, {TEXTOID}, NULL};
static ProtocolQuery q_heartbeat = {"SELECT hagen.heartbeat($1, $2, $3::jsonb)", 3, {INT8OID, INT8OID, TEXTOID}, NULL};

/* Hourly upkeep: old history, and work files a crash left behind. */
static ProtocolQuery q_purge = {"SELECT hagen.purge_history(), hagen.sweep_work_dir()", 0, {InvalidOid}, NULL};

static ProtocolQuery *all_queries[] = {&q_claim, &q_next_due, &q_complete, &q_complete_many,
&q_fail, &q_recover, &q_heartbeat, &q_purge};

/*
 * Runs a protocol statement through its kept plan, preparing it the first
 * time.  Plans are dropped after any error (the extension may have been
 * dropped and created again) and prepared anew on next use.
 */
static int
run_query(ProtocolQuery *q, Datum *values, const char *nulls, bool read_only, long count)
{
	if (q->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(q->sql, q->nargs, q->types);

		if (plan == NULL)
			elog(ERROR, "could not prepare \"%s\": %s", q->sql,
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep the plan of \"%s\"", q->sql);
		q->plan = plan;
	}
	return SPI_execute_plan(q->plan, values, nulls, read_only, count);
}

/* Forgets every kept plan. */
static void
forget_plans(void)
{
	int			i;

	for (i = 0; i < (int) lengthof(all_queries); i++)
	{
		if (all_queries[i]->plan)
			SPI_freeplan(all_queries[i]->plan);
		all_queries[i]->plan = NULL;
	}
}

/*
 * run_xact runs body inside its own transaction with SPI connected.
 * Returns false (after logging) when it raised an error, which is rolled back.
 */
static bool
run_xact(const char *activity, XactBody body, void *arg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool ok = true;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, activity);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		body(arg);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		forget_plans();
		ereport(LOG,
				(errmsg("hagenkit: %s failed: %s", activity, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/* True when the extension is installed in this database. */
static bool
extension_installed(void)
{
	return OidIsValid(get_extension_oid("hagenkit", true));
}

typedef struct ClaimArgs
{
	const char *lane;
	int			max_jobs;
	MemoryContext cxt;
	HagenClaim *claims;
	int			n;
	long		next_due_ms;
	bool		installed;
} ClaimArgs;

/* Claims and reads the next due time, in the current transaction. */
static void
claim_in_xact(ClaimArgs *a)
{
	Datum		values[2];
	uint64		i;
	bool		isnull;

	values[0] = CStringGetTextDatum(a->lane);
	values[1] = Int32GetDatum(a->max_jobs);
	if (run_query(&q_claim, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "hagen.claim_jobs failed");
	a->n = (int) SPI_processed;
	a->claims = MemoryContextAllocZero(a->cxt, sizeof(HagenClaim) * Max(a->n, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		effect;
		MemoryContext old;

		a->claims[i].job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		a->claims[i].token = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		effect = SPI_getbinval(tup, desc, 3, &isnull);
		old = MemoryContextSwitchTo(a->cxt);
		a->claims[i].effect = isnull ? NULL : DatumGetJsonbPCopy(effect);
		MemoryContextSwitchTo(old);
	}

	if (run_query(&q_next_due, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "hagen.next_due failed");
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		a->next_due_ms = isnull ? -1 : (long) DatumGetInt64(d);
	}
}

static void
claim_body(void *arg)
{
	ClaimArgs  *a = (ClaimArgs *) arg;

	a->installed = extension_installed();
	if (a->installed)
		claim_in_xact(a);
}

/*
 * hagen_claim_jobs claims up to max_jobs due jobs of a lane.  The claims and
 * their effects are allocated in cxt.  Returns the number claimed, or -1
 * when the extension is not installed (or the claim failed); *next_due_ms
 * is how long until the next job falls due (-1: nothing is queued).
 */
int
hagen_claim_jobs(const char *lane, int max_jobs, MemoryContext cxt,
				 HagenClaim **claims, long *next_due_ms)
{
	ClaimArgs	a;

	memset(&a, 0, sizeof(a));
	a.lane = lane;
	a.max_jobs = max_jobs;
	a.cxt = cxt;
	a.next_due_ms = -1;
	*claims = NULL;
	*next_due_ms = -1;
	if (!run_xact("claiming hagenkit jobs", claim_body, &a) || !a.installed)
		return -1;
	*claims = a.claims;
	*next_due_ms = a.next_due_ms;
	return a.n;
}

typedef struct CompleteArgs
{
	int64		job_id;
	int64		token;
	const char *outcome;
	ProtocolQuery	   *query;
} CompleteArgs;

static void
complete_body(void *arg)
{
	CompleteArgs *a = (CompleteArgs *) arg;
	Datum		values[3];

	if (!extension_installed())
		return;
	if (a->query == &q_complete_many)
		values[0] = CStringGetTextDatum(a->outcome);
	else
	{
		values[0] = Int64GetDatum(a->job_id);
		values[1] = Int64GetDatum(a->token);
		values[2] = CStringGetTextDatum(a->outcome);
	}
	if (run_query(a->query, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "%s failed", a->query->sql);
}

/*
 * hagen_complete_jobs hands back many outcomes in one transaction: a JSON
 * array of {"job_id", "token", "outcome"}.  Returns false when the
 * transaction failed as a whole (the caller then hands them back one by one).
 */
bool
hagen_complete_jobs(const char *outcomes_json)
{
	CompleteArgs a;

	a.job_id = 0;
	a.token = 0;
	a.outcome = outcomes_json;
	a.query = &q_complete_many;
	return run_xact("reporting hagenkit job outcomes", complete_body, &a);
}

/*
 * hagen_complete_job hands an outcome back.  Should SQL fail on it, the job
 * is failed with the error instead, so it never stays leased for nothing.
 */
bool
hagen_complete_job(int64 job_id, int64 token, const char *outcome_json)
{
	CompleteArgs a;

	a.job_id = job_id;
	a.token = token;
	a.outcome = outcome_json;
	a.query = &q_complete;
	if (run_xact("reporting a hagenkit job outcome", complete_body, &a))
		return true;
	a.outcome = "the worker could not record the outcome of this step (see the server log)";
	a.query = &q_fail;
	run_xact("failing a hagenkit job", complete_body, &a);
	return false;
}

typedef struct ExchangeArgs
{
	ClaimArgs	claim;
	const char *outcomes;
} ExchangeArgs;

static void
exchange_body(void *arg)
{
	ExchangeArgs *a = (ExchangeArgs *) arg;

	a->claim.installed = extension_installed();
	if (!a->claim.installed)
		return;
	if (a->claim.max_jobs > 0)
		claim_in_xact(&a->claim);
	if (a->outcomes)
	{
		Datum		values[1];

		values[0] = CStringGetTextDatum(a->outcomes);
		if (run_query(&q_complete_many, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "hagen.complete_jobs failed");
	}
}

/*
 * hagen_exchange claims up to max_jobs due jobs of a lane (none when 0) and
 * hands back a batch of outcomes (a JSON array as for hagen_complete_jobs,
 * or NULL) in one transaction: one commit, one WAL flush, where claiming and
 * reporting apart cost two.  The claims come first, so no job is claimed in
 * the transaction that queued it.  Returns the number claimed, -1 when the
 * extension is not installed, -2 when the transaction failed as a whole
 * (nothing of it happened: the caller hands the outcomes back and claims on
 * their own, apart).
 */
int
hagen_exchange(const char *outcomes_json, const char *lane, int max_jobs, MemoryContext cxt,
			   HagenClaim **claims, long *next_due_ms)
{
	ExchangeArgs a;

	memset(&a, 0, sizeof(a));
	a.claim.lane = lane;
	a.claim.max_jobs = max_jobs;
	a.claim.cxt = cxt;
	a.claim.next_due_ms = -1;
	a.outcomes = outcomes_json;
	*claims = NULL;
	*next_due_ms = -1;
	if (!run_xact(max_jobs > 0 ? "claiming and reporting hagenkit jobs" : "reporting hagenkit job outcomes",
				  exchange_body, &a))
		return -2;
	if (!a.claim.installed)
		return -1;
	*claims = a.claim.claims;
	*next_due_ms = a.claim.next_due_ms;
	return a.claim.n;
}

typedef struct RecoverArgs
{
	const char *lane;
	bool		installed;
} RecoverArgs;

static void
recover_body(void *arg)
{
	RecoverArgs *a = (RecoverArgs *) arg;
	Datum		values[1];

	a->installed = extension_installed();
	if (!a->installed)
		return;
	values[0] = CStringGetTextDatum(a->lane);
	if (run_query(&q_recover, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "hagen.recover_jobs failed");
}

/* hagen_recover_jobs takes up the jobs of a lane whose worker died. */
void
hagen_recover_jobs(const char *lane)
{
	RecoverArgs a;

	a.lane = lane;
	a.installed = false;
	run_xact("recovering hagenkit jobs", recover_body, &a);
}

typedef struct HeartbeatArgs
{
	int64		job_id;
	int64		token;
	const char *progress;
	bool		keep;
} HeartbeatArgs;

static void
heartbeat_body(void *arg)
{
	HeartbeatArgs *a = (HeartbeatArgs *) arg;
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;

	if (!extension_installed())
		return;
	values[0] = Int64GetDatum(a->job_id);
	values[1] = Int64GetDatum(a->token);
	if (a->progress)
		values[2] = CStringGetTextDatum(a->progress);
	else
		nulls[2] = 'n';
	if (run_query(&q_heartbeat, values, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "hagen.heartbeat failed");
	a->keep = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * hagen_heartbeat keeps the lease of a long effect and reports progress.
 * Returns false when the job was canceled or its lease lost: stop then.
 */
bool
hagen_heartbeat(int64 job_id, int64 token, const char *progress_json)
{
	HeartbeatArgs a;

	a.job_id = job_id;
	a.token = token;
	a.progress = progress_json;
	a.keep = true;
	if (!run_xact("hagenkit heartbeat", heartbeat_body, &a))
		return true;			/* a failed heartbeat is not a cancel */
	return a.keep;
}

static void
purge_body(void *arg pg_attribute_unused())
{
	if (!extension_installed())
		return;
	if (run_query(&q_purge, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "hagen.purge_history failed");
}

/* hagen_purge_history deletes history older than hagen.log_retention. */
void
hagen_purge_history(void)
{
	run_xact("purging hagenkit history", purge_body, NULL);
}
