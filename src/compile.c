/*-------------------------------------------------------------------------
 *
 * compile.c
 *	  Carries out a compile effect in a compile worker: gathers the
 *	  segments (local copies from clip generation, else downloaded from
 *	  storage) and the music (through the network guard), runs
 *	  hagen-compile as a child process with CPU-time, memory and wall-clock
 *	  limits and a clean environment, relays its progress, and stores the
 *	  final video and its thumbnail.
 *
 * A crash of the helper on a bad media file kills the helper, never the
 * server: the outcome reports it and SQL decides (one retry, then fail).
 * Downloads and uploads go through the same HTTP executor as the
 * dispatcher's, so the same guard, limits and signing apply.
 *
 * IDENTIFICATION
 *	  src/compile.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compile.h"
#include "http.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define HELPER_MEMORY_LIMIT ((rlim_t) 4 * 1024 * 1024 * 1024)
#define HEARTBEAT_MS 2000

static HagenHttp *executor = NULL;

/* An outcome reporting an error (and the 1-based segment it concerns, or 0). */
static char *
error_outcome(const char *error, int segment)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"status\":\"error\"");
	hagen_json_string(&buf, "error", error);
	if (segment > 0)
		appendStringInfo(&buf, ",\"segment\":%d", segment);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * Runs one HTTP effect (JSON text) to completion through the executor.
 * Returns NULL on a 2xx answer, else a readable error.
 */
static char *
run_http(const char *effect_json)
{
	Jsonb	   *effect = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
															CStringGetDatum(effect_json)));
	int64		job_id;
	int64		token;
	char	   *outcome;
	Jsonb	   *o;
	int64		status;
	char	   *err;

	if (executor == NULL)
		executor = hagen_http_create(TopMemoryContext);
	hagen_http_start(executor, 0, 0, effect);
	while (!hagen_http_next_done(executor, &job_id, &token, &outcome))
		hagen_http_wait(executor, 1000);
	o = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(outcome)));
	status = hagen_jsonb_int(o, "status", 0);
	if (status >= 200 && status < 300)
		return NULL;
	err = hagen_jsonb_text(o, "error");
	if (err)
		return err;
	return psprintf("HTTP %lld%s%s", (long long) status,
					hagen_jsonb_text(o, "body_text") ? ": " : "",
					hagen_jsonb_text(o, "body_text") ? hagen_jsonb_text(o, "body_text") : "");
}

/* A GET effect that saves to a work file. */
static char *
get_effect(const char *url, const char *auth, bool guard, const char *file)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":\"http\",\"method\":\"GET\",\"timeout_ms\":600000");
	hagen_json_string(&buf, "url", url);
	hagen_json_string(&buf, "auth", auth);
	hagen_json_string(&buf, "save_to", file);
	appendStringInfo(&buf, ",\"guard\":%s,\"follow_redirects\":%s}",
					 guard ? "true" : "false", guard ? "true" : "false");
	return buf.data;
}

/* A PUT effect that uploads a work file to storage. */
static char *
put_effect(Jsonb *target)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":\"http\",\"method\":\"PUT\",\"auth\":\"s3\",\"timeout_ms\":1800000");
	hagen_json_string(&buf, "url", hagen_jsonb_text(target, "url"));
	hagen_json_string(&buf, "body_file", hagen_jsonb_text(target, "file"));
	appendStringInfoString(&buf, ",\"headers\":{");
	hagen_json_string(&buf, "content-type", hagen_jsonb_text(target, "content_type"));
	appendStringInfoString(&buf, "}}");
	return buf.data;
}

/* Does a work file exist (as a regular, non-empty file)? */
static bool
work_file_exists(const char *rel)
{
	char	   *err;
	char	   *path = hagen_work_path(rel, false, &err);
	struct stat st;

	return path && stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

/* The labels of the segments of the compile in progress, for messages; kept
 * in their own context since heartbeats commit transactions meanwhile. */
static List *segment_labels = NIL;
static MemoryContext labels_context = NULL;

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

/* "segment 3 (Kitchen)" for a 1-based segment number. */
static char *
segment_name(int segment)
{
	if (segment >= 1 && segment <= list_length(segment_labels))
		return psprintf("segment %d (%s)", segment, (char *) list_nth(segment_labels, segment - 1));
	return psprintf("segment %d", segment);
}

/*
 * Makes the manifest hagen-compile reads, with absolute paths, gathering
 * every input first.  Returns NULL and sets *error (and *segment) on failure.
 */
static char *
gather_inputs(Jsonb *effect, int *segment, char **error)
{
	Jsonb	   *segs = hagen_jsonb_object(effect, "segments");
	Jsonb	   *music = hagen_jsonb_object(effect, "music");
	Jsonb	   *output = hagen_jsonb_object(effect, "output");
	Jsonb	   *thumb = hagen_jsonb_object(effect, "thumbnail");
	StringInfoData m;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			i = 0;
	char	   *err;

	*segment = 0;
	if (labels_context == NULL)
		labels_context = AllocSetContextCreate(TopMemoryContext, "hagenkit segment labels",
											   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(labels_context);
	segment_labels = NIL;
	if (segs == NULL || !JB_ROOT_IS_ARRAY(segs) || JB_ROOT_COUNT(segs) == 0)
	{
		*error = pstrdup("the compile has no segments");
		return NULL;
	}
	initStringInfo(&m);
	appendStringInfoString(&m, "{\"segments\":[");
	it = JsonbIteratorInit(&segs->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *seg;
		char	   *file;
		char	   *path;
		char	   *crossfade;

		if (tok != WJB_ELEM || v.type != jbvBinary)
			continue;
		seg = JsonbValueToJsonb(&v);
		file = hagen_jsonb_text(seg, "file");
		{
			MemoryContext old = MemoryContextSwitchTo(labels_context);
			char	   *label = hagen_jsonb_text(seg, "label");

			segment_labels = lappend(segment_labels, label ? label : psprintf("clip %d", i + 1));
			MemoryContextSwitchTo(old);
		}
		if (!work_file_exists(file))
		{
			char	   *failure = run_http(get_effect(hagen_jsonb_text(seg, "url"), "s3", false, file));

			if (failure)
			{
				*segment = i + 1;
				*error = psprintf("could not fetch segment %d (%s) from storage: %s", i + 1,
								  hagen_jsonb_text(seg, "label"), failure);
				return NULL;
			}
		}
		path = hagen_work_path(file, false, &err);
		if (i > 0)
			appendStringInfoChar(&m, ',');
		appendStringInfoChar(&m, '{');
		hagen_json_string(&m, "file", path);
		hagen_json_string(&m, "kind", hagen_jsonb_text(seg, "kind"));
		hagen_json_string(&m, "label", hagen_jsonb_text(seg, "label"));
		crossfade = hagen_jsonb_text(seg, "crossfade");
		if (crossfade && crossfade[0])
		{
			char	   *end;
			double		seconds = strtod(crossfade, &end);

			/* A number from SQL; the helper checks its range again. */
			if (*end == '\0' && seconds > 0)
				appendStringInfo(&m, ",\"crossfade\":%.6f", seconds);
		}
		appendStringInfoChar(&m, '}');
		i++;
	}
	appendStringInfoString(&m, "]");

	if (music)
	{
		char	   *file = hagen_jsonb_text(music, "file");
		char	   *failure = NULL;

		if (!work_file_exists(file))
			failure = run_http(get_effect(hagen_jsonb_text(music, "url"), "none", true, file));
		if (failure)
		{
			*error = psprintf("could not fetch the music track: %s", failure);
			return NULL;
		}
		appendStringInfoString(&m, ",\"music\":{");
		hagen_json_string(&m, "file", hagen_work_path(file, false, &err));
		appendStringInfo(&m, ",\"volume\":%s}", hagen_jsonb_text(music, "volume"));
	}
	else
		appendStringInfoString(&m, ",\"music\":null");
	appendStringInfo(&m, ",\"video_volume\":%s", hagen_jsonb_text(effect, "video_volume"));
	hagen_json_string(&m, "aspect_ratio", hagen_jsonb_text(effect, "aspect_ratio"));
	hagen_json_string(&m, "mode", "auto");
	hagen_json_string(&m, "output", hagen_work_path(hagen_jsonb_text(output, "file"), true, &err));
	hagen_json_string(&m, "thumbnail", hagen_work_path(hagen_jsonb_text(thumb, "file"), true, &err));
	appendStringInfoChar(&m, '}');
	return m.data;
}

/* In the child: limits, a clean environment, then exec the helper. */
static void
exec_helper(const char *manifest_path, int out_fd, const char *log_path, long timeout_s)
{
	struct rlimit rl;
	char	   *argv[4];
	char	   *envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", NULL};
	int			log_fd;
	int			fd;

	setsid();
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGQUIT, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	rl.rlim_cur = rl.rlim_max = (rlim_t) timeout_s;
	setrlimit(RLIMIT_CPU, &rl);
	rl.rlim_cur = rl.rlim_max = HELPER_MEMORY_LIMIT;
	setrlimit(RLIMIT_AS, &rl);
	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	fd = open("/dev/null", O_RDONLY);
	dup2(fd, 0);
	dup2(out_fd, 1);
	dup2(log_fd >= 0 ? log_fd : out_fd, 2);
	for (fd = 3; fd < 1024; fd++)
		close(fd);
	argv[0] = hagen_compile_helper;
	argv[1] = "compile";
	argv[2] = (char *) manifest_path;
	argv[3] = NULL;
	execve(hagen_compile_helper, argv, envp);
	_exit(127);
}

/*
 * Runs hagen-compile on a manifest, relaying progress.  Returns the
 * "result" object of its last line as JSON text, or NULL with *error set.
 */
static char *
run_helper(int64 job_id, int64 token, const char *manifest_path, const char *log_path,
		   int *segment, char **error)
{
	int			pipefd[2];
	pid_t		pid;
	StringInfoData line;
	char	   *result = NULL;
	char	   *helper_error = NULL;
	TimestampTz deadline;
	TimestampTz last_beat = 0;
	bool		killed = false;
	const char *kill_reason = NULL;
	int			wstatus = 0;
	int			current = 0;	/* the segment the helper is working on */
	Jsonb	   *p;
	char		buf[8192];

	*segment = 0;
	if (pipe(pipefd) != 0)
	{
		*error = psprintf("could not create a pipe: %m");
		return NULL;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0)
	{
		close(pipefd[0]);
		close(pipefd[1]);
		*error = psprintf("could not start hagen-compile: %m");
		return NULL;
	}
	if (pid == 0)
		exec_helper(manifest_path, pipefd[1], log_path, hagen_compile_timeout_s);
	close(pipefd[1]);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   (int64) hagen_compile_timeout_s * 1000);
	initStringInfo(&line);

	for (;;)
	{
		ssize_t		n = read(pipefd[0], buf, sizeof(buf));
		TimestampTz now = GetCurrentTimestamp();

		if (n > 0)
		{
			ssize_t		i;

			for (i = 0; i < n; i++)
			{
				if (buf[i] != '\n')
				{
					if (line.len < 1024 * 1024)
						appendStringInfoChar(&line, buf[i]);
					continue;
				}
				if (strncmp(line.data, "{\"result\"", 9) == 0)
					result = pstrdup(line.data);
				else if (strncmp(line.data, "{\"error\"", 8) == 0)
					helper_error = pstrdup(line.data);
				else if (strncmp(line.data, "{\"progress\"", 11) == 0 &&
						 (p = try_jsonb(line.data)) != NULL)
				{
					char	   *frac = hagen_jsonb_text(p, "progress");
					char	   *progress;

					if (hagen_jsonb_int(p, "segment", 0) > 0)
						current = (int) hagen_jsonb_int(p, "segment", 0);
					if (!TimestampDifferenceExceeds(last_beat, now, HEARTBEAT_MS))
					{
						resetStringInfo(&line);
						continue;
					}
					progress = psprintf("{\"step\":\"compiling\",\"label\":\"Compiling the video\",\"percent\":%.1f}",
										85.0 + 14.0 * (frac ? fmin(fmax(strtod(frac, NULL), 0), 1) : 0));

					last_beat = now;
					if (!hagen_heartbeat(job_id, token, progress) && !killed)
					{
						kill(-pid, SIGKILL);
						killed = true;
						kill_reason = "the compile was canceled";
					}
				}
				resetStringInfo(&line);
			}
			continue;
		}
		if (n == 0)
			break;				/* EOF: the helper has exited */
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			break;
		if (now >= deadline && !killed)
		{
			kill(-pid, SIGKILL);
			killed = true;
			kill_reason = psprintf("hagen-compile took longer than hagen.compile_timeout (%d s)",
								   hagen_compile_timeout_s);
		}
		if (last_beat == 0 || TimestampDifferenceExceeds(last_beat, now, HEARTBEAT_MS * 5))
		{
			last_beat = now;
			if (!hagen_heartbeat(job_id, token, NULL) && !killed)
			{
				kill(-pid, SIGKILL);
				killed = true;
				kill_reason = "the compile was canceled";
			}
		}
		(void) WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT |
								 WL_EXIT_ON_PM_DEATH, pipefd[0], 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		if (ProcDiePending)
		{
			kill(-pid, SIGKILL);
			waitpid(pid, &wstatus, 0);
			close(pipefd[0]);
			CHECK_FOR_INTERRUPTS();
		}
	}
	close(pipefd[0]);
	while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
		;

	if (kill_reason)
	{
		*segment = current;
		*error = current > 0 ? psprintf("%s, while on %s", kill_reason, segment_name(current))
			: pstrdup(kill_reason);
		return NULL;
	}
	if (WIFSIGNALED(wstatus))
	{
		*segment = current;
		*error = psprintf("hagen-compile crashed (signal %d: %s)%s%s; see %s",
						  WTERMSIG(wstatus), pg_strsignal(WTERMSIG(wstatus)),
						  current > 0 ? " while on " : "", current > 0 ? segment_name(current) : "",
						  log_path);
		return NULL;
	}
	if (helper_error && try_jsonb(helper_error))
	{
		Jsonb	   *e = try_jsonb(helper_error);
		Jsonb	   *obj = hagen_jsonb_object(e, "error");

		*segment = (int) hagen_jsonb_int(obj, "segment", 0);
		*error = hagen_jsonb_text(obj, "message");
		if (*error == NULL)
			*error = helper_error;
		return NULL;
	}
	if (WEXITSTATUS(wstatus) == 127)
	{
		*error = psprintf("could not run the compile helper \"%s\"", hagen_compile_helper);
		return NULL;
	}
	if (WEXITSTATUS(wstatus) != 0 || result == NULL)
	{
		*error = psprintf("hagen-compile exited with status %d without a result; see %s",
						  WEXITSTATUS(wstatus), log_path);
		return NULL;
	}
	{
		Jsonb	   *r = try_jsonb(result);

		if (r == NULL)
		{
			*error = psprintf("hagen-compile printed a result that is not JSON; see %s", log_path);
			return NULL;
		}

		return hagen_jsonb_value_json(r, "result");
	}
}

/*
 * hagen_compile_run carries out a compile effect and returns its outcome
 * as JSON text: {"status":"ok","result":{...},"final_key":..,"thumbnail_key":..}
 * or {"status":"error","error":..,"segment":..}.
 */
char *
hagen_compile_run(int64 job_id, int64 token, Jsonb *effect)
{
	char	   *error = NULL;
	int			segment = 0;
	char	   *manifest;
	char	   *work_rel = hagen_jsonb_text(effect, "work_dir");
	char	   *manifest_path;
	char	   *log_path;
	char	   *result;
	char	   *failure;
	Jsonb	   *output = hagen_jsonb_object(effect, "output");
	Jsonb	   *thumb = hagen_jsonb_object(effect, "thumbnail");
	FILE	   *f;
	StringInfoData out;

	if (output == NULL || thumb == NULL || work_rel == NULL)
		return error_outcome("the compile effect lacks output, thumbnail or work_dir", -1);
	manifest = gather_inputs(effect, &segment, &error);
	if (manifest == NULL)
		return error_outcome(error, segment);

	manifest_path = hagen_work_path(psprintf("%s/manifest.json", work_rel), true, &error);
	log_path = hagen_work_path(psprintf("%s/compile.log", work_rel), true, &error);
	if (manifest_path == NULL || log_path == NULL)
		return error_outcome(error, -1);
	f = fopen(manifest_path, "w");
	if (f == NULL || fputs(manifest, f) < 0 || fclose(f) != 0)
		return error_outcome(psprintf("could not write \"%s\": %m", manifest_path), -1);

	result = run_helper(job_id, token, manifest_path, log_path, &segment, &error);
	if (result == NULL)
		return error_outcome(error, segment);

	failure = run_http(put_effect(output));
	if (failure == NULL)
		failure = run_http(put_effect(thumb));
	if (failure)
		return error_outcome(psprintf("could not store the final video: %s", failure), -1);

	/* Stored: the project's work files are no longer needed. */
	rmtree(hagen_work_path(work_rel, false, &error), true);

	initStringInfo(&out);
	appendStringInfo(&out, "{\"status\":\"ok\",\"result\":%s", result);
	hagen_json_string(&out, "final_key", hagen_jsonb_text(output, "key"));
	hagen_json_string(&out, "thumbnail_key", hagen_jsonb_text(thumb, "key"));
	appendStringInfoChar(&out, '}');
	return out.data;
}
