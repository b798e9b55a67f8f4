/*-------------------------------------------------------------------------
 *
 * compile_worker.c
 *	  A compile worker: claims jobs of the "compile" lane and carries out
 *	  their "compile" effects by running hagen-compile (and their "image"
 *	  effects, a photo fitted to a project's shape: image.c).
 *
 * The effect names a directory of the work directory for this attempt and
 * carries the manifest exactly as SQL emitted it.  The worker writes the
 * manifest there, runs the helper in the work directory (supervise.c),
 * relays the fraction it reports as heartbeats (SQL turns it into the
 * project's percent and answers whether to go on), and hands back the
 * helper's result or what went wrong.  Fetching the inputs and storing the
 * outputs are steps of their own on the http lane.
 *
 * IDENTIFICATION
 *	  src/compile_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include "image.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "supervise.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define SAFETY_TIMER_MS 5000
#define NOT_INSTALLED_SLEEP_MS 10000
#define HEARTBEAT_MS 2000

/* What one run of the helper has told so far. */
typedef struct CompileRun
{
	int64		job_id;
	int64		token;
	Jsonb	   *segments;		/* the manifest's, for naming them */
	int			segment;		/* the one it works on (1-based), 0: none yet */
	double		fraction;
	bool		fraction_changed;
	char	   *result;			/* the "result" object of its last line */
	char	   *error;			/* the message of its error line */
	int			error_segment;
} CompileRun;

/*
 * Parses a line the helper printed; NULL when it is not JSON.  The helper
 * is our own program, but a line it did not finish (or a stand-in's) must
 * not throw an ERROR in the worker.
 */
static Jsonb *
try_jsonb(const char *text)
{
	MemoryContext mcxt = CurrentMemoryContext;
	Jsonb	   *volatile result = NULL;

	PG_TRY();
	{
		result = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(mcxt);
		FlushErrorState();
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/*
 * "segment 3 (Kitchen)" for a 1-based segment number.  The segments of a
 * chunk's manifest are some of the video's, each with its "index"; those of
 * other manifests are all of them, in order.
 */
static char *
segment_name(CompileRun *r, int segment)
{
	char	   *label = NULL;
	int			n = r->segments ? (int) JB_ROOT_COUNT(r->segments) : 0;

	for (int i = 0; i < n && label == NULL; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&r->segments->root, i);
		Jsonb	   *seg;

		if (v == NULL || v->type != jbvBinary)
			continue;
		seg = JsonbValueToJsonb(v);
		if (hagen_jsonb_int(seg, "index", i + 1) == segment)
			label = hagen_jsonb_text(seg, "label");
	}
	return label ? psprintf("segment %d (%s)", segment, label) : psprintf("segment %d", segment);
}

/* Takes a line of the helper (or a tick, line NULL): progress, result, error. */
static const char *
on_line(const char *line, void *arg)
{
	CompileRun *r = (CompileRun *) arg;
	Jsonb	   *j;

	if (line != NULL)
	{
		if (line[0] != '{' || (j = try_jsonb(line)) == NULL)
			return NULL;
		if (hagen_jsonb_object(j, "result"))
			r->result = hagen_jsonb_value_json(j, "result");
		else if (hagen_jsonb_object(j, "error"))
		{
			Jsonb	   *e = hagen_jsonb_object(j, "error");

			r->error = hagen_jsonb_text(e, "message");
			r->error_segment = (int) hagen_jsonb_int(e, "segment", 0);
		}
		else if (hagen_jsonb_text(j, "progress"))
		{
			double		f = strtod(hagen_jsonb_text(j, "progress"), NULL);

			if (hagen_jsonb_int(j, "segment", 0) > 0)
				r->segment = (int) hagen_jsonb_int(j, "segment", 0);
			if (f >= 0 && f <= 1 && f != r->fraction)
			{
				r->fraction = f;
				r->fraction_changed = true;
			}
		}
		return NULL;
	}

	/* A tick: a heartbeat keeps the lease, carries the fraction, and tells
	 * whether the job is still ours. */
	{
		char	   *progress = NULL;

		if (r->fraction_changed)
			progress = psprintf("{\"fraction\":%.4f}", r->fraction);
		r->fraction_changed = false;
		if (!hagen_heartbeat(r->job_id, r->token, progress))
			return "the compile was canceled";
	}
	return NULL;
}

/* An outcome reporting an error (and the 1-based segment it concerns). */
static char *
error_outcome(const char *error, int segment)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"status\":\"error\",\"error\":");
	escape_json(&buf, error);
	if (segment > 0)
		appendStringInfo(&buf, ",\"segment\":%d", segment);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * Carries out a compile effect: {"type":"compile","dir":...,"manifest":{...},
 * "timeout_ms":...}.  Returns the outcome as JSON text:
 * {"status":"ok","result":{...}} or {"status":"error","error":...,"segment":N}.
 */
static char *
run_compile(int64 job_id, int64 token, Jsonb *effect)
{
	char	   *dir = hagen_jsonb_text(effect, "dir");
	char	   *manifest = hagen_jsonb_value_json(effect, "manifest");
	Jsonb	   *m = hagen_jsonb_object(effect, "manifest");
	char	   *error;
	char	   *manifest_rel;
	char	   *manifest_path;
	char	   *log_path;
	char	   *argv[4];
	FILE	   *f;
	CompileRun	r;
	HagenHelperRun run;

	if (dir == NULL || manifest == NULL || m == NULL)
		return error_outcome("the compile effect lacks dir or manifest", 0);
	manifest_rel = psprintf("%s/manifest.json", dir);
	if ((manifest_path = hagen_work_path(manifest_rel, true, &error)) == NULL ||
		(log_path = hagen_work_path(psprintf("%s/compile.log", dir), true, &error)) == NULL)
		return error_outcome(error, 0);
	f = fopen(manifest_path, "w");
	if (f == NULL || fputs(manifest, f) < 0 || fclose(f) != 0)
		return error_outcome(psprintf("could not write \"%s\": %m", manifest_path), 0);

	memset(&r, 0, sizeof(r));
	r.job_id = job_id;
	r.token = token;
	r.segments = hagen_jsonb_object(m, "segments");
	r.fraction = -1;
	argv[0] = hagen_compile_helper;
	argv[1] = "compile";
	argv[2] = manifest_rel;		/* the helper runs in the work directory */
	argv[3] = NULL;
	memset(&run, 0, sizeof(run));
	run.argv = argv;
	run.log_path = log_path;
	run.timeout_s = hagen_compile_timeout_s;
	run.tick_ms = HEARTBEAT_MS;
	run.on_line = on_line;
	run.arg = &r;
	pgstat_report_activity(STATE_RUNNING, "running hagen-compile");
	hagen_helper_run(&run);
	pgstat_report_activity(STATE_IDLE, NULL);

	if (run.stopped)
		return error_outcome(r.segment > 0 ? psprintf("%s, while on %s", run.stopped,
													  segment_name(&r, r.segment))
							 : run.stopped, r.segment);
	if (WIFSIGNALED(run.wstatus))
		return error_outcome(psprintf("hagen-compile crashed (signal %d: %s)%s%s; see %s",
									  WTERMSIG(run.wstatus), pg_strsignal(WTERMSIG(run.wstatus)),
									  r.segment > 0 ? " while on " : "",
									  r.segment > 0 ? segment_name(&r, r.segment) : "", log_path),
							 r.segment);
	if (r.error)
		return error_outcome(r.error, r.error_segment);
	if (WEXITSTATUS(run.wstatus) == 127)
		return error_outcome(psprintf("could not run the compile helper \"%s\"", hagen_compile_helper), 0);
	if (WEXITSTATUS(run.wstatus) != 0 || r.result == NULL)
		return error_outcome(psprintf("hagen-compile exited with status %d without a result; see %s",
									  WEXITSTATUS(run.wstatus), log_path), 0);
	return psprintf("{\"status\":\"ok\",\"result\":%s}", r.result);
}

/* Carries out one claimed effect of the compile lane. */
static char *
run_effect(int64 job_id, int64 token, Jsonb *effect)
{
	char	   *type = hagen_jsonb_text(effect, "type");

	if (type && strcmp(type, "compile") == 0)
		return run_compile(job_id, token, effect);
	if (type && strcmp(type, "image") == 0)
		return hagen_image_run(job_id, token, effect);
	return error_outcome(psprintf("a compile worker cannot carry out an effect of type \"%s\"",
								  type ? type : "(none)"), 0);
}

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
		hagen_lane_reading();
		n = hagen_claim_jobs("compile", 1, loop_cxt, &claims, &next_due_ms);
		if (n < 0)
		{
			recovered = false;
			sleep_ms = NOT_INSTALLED_SLEEP_MS;
		}
		else if (n == 1)
		{
			char	   *outcome = run_effect(claims[0].job_id, claims[0].token, claims[0].effect);

			hagen_complete_job(claims[0].job_id, claims[0].token, outcome);
			sleep_ms = 0;
		}
		else
			sleep_ms = next_due_ms < 0 ? SAFETY_TIMER_MS : Min(next_due_ms, SAFETY_TIMER_MS);
		MemoryContextReset(loop_cxt);
		if (sleep_ms > 0)
		{
			TimestampTz now = GetCurrentTimestamp();
			TimestampTz wake_at;

			/* Woken early only by compile work falling due before then. */
			wake_at = hagen_lane_sleep(TimestampTzPlusMilliseconds(now, sleep_ms), true);
			sleep_ms = TimestampDifferenceMilliseconds(now, wake_at);
			if (sleep_ms > 0)
				hagen_worker_wait(sleep_ms);
			hagen_lane_awake();
		}
	}
}
