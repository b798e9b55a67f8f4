/*-------------------------------------------------------------------------
 *
 * image.c
 *	  Carries out an "image" effect in a compile worker: fits a photo to a
 *	  project's aspect ratio with `hagen-compile image`, run like the
 *	  compile (supervise.c: bound to the worker, under limits, in the work
 *	  directory).
 *
 * The effect, built in SQL (hagen._image_effect):
 *	  {"type":"image","input":REL,"output":REL,"aspect":"9:16","fit":"crop",
 *	   "max_side":1920,"min_side":300,"max_bytes":10485760,"timeout_ms":60000}
 * with paths relative to the work directory.  The outcome:
 *	  {"status":"ok","result":{"width":..,"height":..,"bytes":..,...}} or
 *	  {"status":"error","error":..,"kind":"input"|"crash"}.
 * A photo the helper cannot read is an "input" error, which SQL does not
 * retry; a crash, a helper that ran out of time or one that could not be
 * started may be retried.
 *
 * IDENTIFICATION
 *	  src/image.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <sys/wait.h>

#include "common/jsonapi.h"
#include "image.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "supervise.h"
#include "utils/builtins.h"
#include "utils/json.h"

#define IMAGE_TICK_MS 1000

/* What the helper has told so far. */
typedef struct ImageRun
{
	int64		job_id;
	int64		token;
	char	   *result;			/* the "image" object of its line */
	char	   *error;			/* the message of its error line */
} ImageRun;

static char *
outcome_error(const char *kind, const char *error)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"status\":\"error\",\"kind\":");
	escape_json(&buf, kind);
	appendStringInfoString(&buf, ",\"error\":");
	escape_json(&buf, error);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* The helper's line as jsonb, or NULL when it is not JSON (checked with the
 * non-throwing parser first: no ERROR, no subtransaction). */
static Jsonb *
parse_line(const char *text)
{
	JsonLexContext *lex = makeJsonLexContextCstringLen((char *) text, strlen(text),
													   GetDatabaseEncoding(), false);

	if (text[0] != '{' || pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return NULL;
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/* Takes a line of the helper, or a tick (line NULL): is the job still ours? */
static const char *
on_line(const char *line, void *arg)
{
	ImageRun   *r = (ImageRun *) arg;
	Jsonb	   *j;

	if (line == NULL)
		return hagen_heartbeat(r->job_id, r->token, NULL) ? NULL
			: "the job was canceled while its photo was being fitted";
	if ((j = parse_line(line)) == NULL)
		return NULL;
	if (hagen_jsonb_object(j, "image"))
		r->result = hagen_jsonb_value_json(j, "image");
	else if (hagen_jsonb_object(j, "error"))
		r->error = hagen_jsonb_text(hagen_jsonb_object(j, "error"), "message");
	return NULL;
}

/* A whole number of the effect as text, or the fallback. */
static char *
number_arg(Jsonb *effect, const char *key, long fallback)
{
	char	   *v = hagen_jsonb_text(effect, key);
	char	   *end;
	long		n;

	if (v == NULL)
		return psprintf("%ld", fallback);
	n = strtol(v, &end, 10);
	return psprintf("%ld", (*end == '\0' && n > 0) ? n : fallback);
}

/*
 * hagen_image_run carries out an image effect and returns its outcome as
 * JSON text.
 */
char *
hagen_image_run(int64 job_id, int64 token, Jsonb *effect)
{
	char	   *in = hagen_jsonb_text(effect, "input");
	char	   *out = hagen_jsonb_text(effect, "output");
	char	   *aspect = hagen_jsonb_text(effect, "aspect");
	char	   *fit = hagen_jsonb_text(effect, "fit");
	char	   *err = NULL;
	char	   *log_path;
	char	   *argv[15];
	long		timeout_ms = 60000;
	ImageRun	r;
	HagenHelperRun run;

	if (in == NULL || out == NULL || aspect == NULL || fit == NULL)
		return outcome_error("input", "the image effect lacks input, output, aspect or fit");
	/* The output's directory exists, and the helper's stderr goes beside it. */
	if (hagen_work_path(out, true, &err) == NULL ||
		(log_path = hagen_work_path(psprintf("%s.log", out), true, &err)) == NULL)
		return outcome_error("input", err);
	if (hagen_jsonb_text(effect, "timeout_ms"))
		timeout_ms = Max(1000, strtol(hagen_jsonb_text(effect, "timeout_ms"), NULL, 10));

	argv[0] = hagen_compile_helper;
	argv[1] = "image";
	argv[2] = in;				/* relative: the helper runs in the work directory */
	argv[3] = out;
	argv[4] = "--aspect";
	argv[5] = aspect;
	argv[6] = "--fit";
	argv[7] = fit;
	argv[8] = "--max-side";
	argv[9] = number_arg(effect, "max_side", 1920);
	argv[10] = "--min-side";
	argv[11] = number_arg(effect, "min_side", 300);
	argv[12] = "--max-bytes";
	argv[13] = number_arg(effect, "max_bytes", 10 * 1024 * 1024);
	argv[14] = NULL;

	memset(&r, 0, sizeof(r));
	r.job_id = job_id;
	r.token = token;
	memset(&run, 0, sizeof(run));
	run.argv = argv;
	run.log_path = log_path;
	run.timeout_s = (int) ((timeout_ms + 999) / 1000);
	run.tick_ms = IMAGE_TICK_MS;
	run.on_line = on_line;
	run.arg = &r;
	pgstat_report_activity(STATE_RUNNING, "running hagen-compile image");
	hagen_helper_run(&run);
	pgstat_report_activity(STATE_IDLE, NULL);

	if (run.stopped)
		return outcome_error("crash", run.stopped);
	if (WIFSIGNALED(run.wstatus))
		return outcome_error("crash", psprintf("hagen-compile image crashed (signal %d: %s)",
											   WTERMSIG(run.wstatus), pg_strsignal(WTERMSIG(run.wstatus))));
	if (r.error)
		return outcome_error("input", r.error);
	if (WEXITSTATUS(run.wstatus) == 127)
		return outcome_error("crash", psprintf("could not run the compile helper \"%s\"",
											   hagen_compile_helper));
	if (WEXITSTATUS(run.wstatus) != 0 || r.result == NULL)
		return outcome_error("crash", psprintf("hagen-compile image exited with status %d without a result; see %s",
											   WEXITSTATUS(run.wstatus), log_path));
	return psprintf("{\"status\":\"ok\",\"result\":%s}", r.result);
}
