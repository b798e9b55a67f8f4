/*
 * worker_job.c: one job of `hagen-compile worker`, in a process of its
 * own (the job runner), forked by the worker for each job it claims.
 *
 * Any effect of the compile lane has the same shape (src/sql/62_remote.sql
 * adds the URLs): {"type": "compile", "dir", "manifest", "timeout_ms",
 * "inputs": [{"file", "key", "url"}], "outputs": [{"file", "key", "url",
 * "content_type", "max_bytes"}], "urls_expire_in"}.  The runner
 *   1. downloads every input to its file (relative to the job's private
 *      directory, as the manifest names them);
 *   2. writes the manifest to DIR/manifest.json and runs `hagen-compile
 *      compile DIR/manifest.json` (this executable) in the job's
 *      directory, as a child bound to it: PR_SET_PDEATHSIG, in the
 *      runner's process group (which the worker kills to stop a job), with
 *      the limits of the in-server compile workers (CPU time and wall clock
 *      of timeout_ms, 4 GB of address space, no core, an environment of
 *      PATH and LANG, stderr to DIR/compile.log); its fraction goes to the
 *      worker, which sends it with the heartbeats;
 *   3. uploads every output, and prints the outcome: {"status": "ok",
 *      "result": {...}, "uploaded": true, "stats": {...}} or
 *      {"status": "error", "error", "segment"?, "transfer"?}.
 * Nothing in it knows what the outputs are: a thumbnail and a video, or a
 * chunk of one.  Every path is checked to stay inside the job's directory.
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HELPER_MEMORY_LIMIT ((rlim_t) 4 * 1024 * 1024 * 1024)
#define MAX_LINE (1024 * 1024)

/* The job being run, for messages. */
static int64_t job_id;
static int	out_fd = -1;

/* Writes a JSON line to the worker. */
static void
tell(json_t *line)
{
	char	   *text = json_dumps(line, JSON_COMPACT);
	size_t		len;
	size_t		done = 0;

	json_decref(line);
	if (text == NULL)
		return;
	len = strlen(text);
	text[len] = '\n';
	while (done < len + 1)
	{
		ssize_t		n = write(out_fd, text + done, len + 1 - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += n;
	}
	free(text);
}

/* Ends the job with an outcome. */
static void __attribute__((noreturn))
finish(json_t *outcome)
{
	tell(json_pack("{s:o}", "outcome", outcome));
	_exit(0);
}

/* Ends the job with an error (segment > 0 names the segment). */
static void __attribute__((noreturn, format(printf, 2, 3)))
fail(int segment, const char *fmt,...)
{
	char		msg[2048];
	va_list		ap;
	json_t	   *o;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	wk_log("job %lld: %s", (long long) job_id, msg);
	o = json_pack("{s:s,s:s}", "status", "error", "error", msg);
	if (segment > 0)
		json_object_set_new(o, "segment", json_integer(segment));
	finish(o);
}

/* Ends the job with a failed transfer: SQL reads the answer's body. */
static void __attribute__((noreturn))
fail_transfer(const WkTransferError *err)
{
	wk_log("job %lld: %s", (long long) job_id, err->message);
	finish(json_pack("{s:s,s:s,s:{s:s,s:s,s:i,s:s}}", "status", "error", "error", err->message,
					 "transfer", "what", err->what, "key", err->key ? err->key : "",
					 "status", (int) err->status, "body_text", err->body));
}

/* A relative path that stays below the directory it is relative to. */
static bool
safe_path(const char *p)
{
	const char *s = p;

	if (p == NULL || p[0] == '\0' || p[0] == '/' || strlen(p) > 1024)
		return false;
	for (const char *c = p; *c; c++)
		if ((unsigned char) *c < 0x20)
			return false;
	while (*s)
	{
		const char *e = strchr(s, '/');
		size_t		n = e ? (size_t) (e - s) : strlen(s);

		if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
			return false;
		s += n;
		if (*s == '/')
			s++;
	}
	return true;
}

/* Every "file", "input", "output" and "thumbnail" string of the manifest is
 * safe (a photo's manifest names its "input"). */
static const char *
unsafe_manifest_path(json_t *v)
{
	const char *key;
	json_t	   *x;
	size_t		i;
	const char *bad;

	if (json_is_object(v))
	{
		json_object_foreach(v, key, x)
		{
			if (json_is_string(x) && (strcmp(key, "file") == 0 || strcmp(key, "input") == 0 ||
									  strcmp(key, "output") == 0 || strcmp(key, "thumbnail") == 0) &&
				!safe_path(json_string_value(x)))
				return json_string_value(x);
			if ((bad = unsafe_manifest_path(x)) != NULL)
				return bad;
		}
	}
	else if (json_is_array(v))
	{
		json_array_foreach(v, i, x)
		{
			if ((bad = unsafe_manifest_path(x)) != NULL)
				return bad;
		}
	}
	return NULL;
}

/* Reads the files of "inputs" or "outputs"; fails the job when malformed. */
static WkFile *
read_files(json_t *effect, const char *which, int *n)
{
	json_t	   *list = json_object_get(effect, which);
	WkFile	   *files;
	json_t	   *x;
	size_t		i;

	if (!json_is_array(list))
		fail(0, "the effect has no \"%s\" list", which);
	*n = (int) json_array_size(list);
	files = calloc(*n > 0 ? *n : 1, sizeof(WkFile));
	json_array_foreach(list, i, x)
	{
		files[i].path = json_string_value(json_object_get(x, "file"));
		files[i].key = json_string_value(json_object_get(x, "key"));
		files[i].url = json_string_value(json_object_get(x, "url"));
		files[i].content_type = json_string_value(json_object_get(x, "content_type"));
		if (!safe_path(files[i].path) || files[i].url == NULL || files[i].key == NULL)
			fail(0, "%s %zu of the effect lacks a file inside the job's directory, a key or a URL", which, i + 1);
	}
	return files;
}

/* "segment 3 (Kitchen)" for a 1-based segment of the manifest. */
static char *
segment_name(json_t *manifest, int segment)
{
	json_t	   *seg = json_array_get(json_object_get(manifest, "segments"), segment - 1);
	const char *label = json_string_value(json_object_get(seg, "label"));
	char	   *s = malloc(300);

	if (label)
		snprintf(s, 300, "segment %d (%s)", segment, label);
	else
		snprintf(s, 300, "segment %d", segment);
	return s;
}

/* In the helper's process: bound to the runner, limits, exec. */
static void __attribute__((noreturn))
exec_helper(const char *self, const char *manifest_rel, const char *log_path, int timeout_s,
			pid_t runner, int pipe_out)
{
	struct rlimit rl;
	char	   *argv[] = {"hagen-compile", "compile", (char *) manifest_rel, NULL};
	char	   *envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", NULL};
	int			fd;
	int			log_fd;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != runner)
		_exit(126);				/* the runner is gone already */
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	rl.rlim_cur = rl.rlim_max = (rlim_t) timeout_s;
	setrlimit(RLIMIT_CPU, &rl);
	rl.rlim_cur = rl.rlim_max = HELPER_MEMORY_LIMIT;
	setrlimit(RLIMIT_AS, &rl);
	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	fd = open("/dev/null", O_RDONLY);
	dup2(fd, 0);
	dup2(pipe_out, 1);
	dup2(log_fd >= 0 ? log_fd : pipe_out, 2);
	for (fd = 3; fd < 1024; fd++)
		close(fd);
	execve(self, argv, envp);
	_exit(127);
}

/* What the helper told, and how it ended. */
typedef struct HelperRun
{
	json_t	   *result;
	char	   *error;
	int			error_segment;
	int			segment;		/* the one it was on */
	int			wstatus;
	bool		timed_out;
} HelperRun;

/* Reads one line of the helper: progress (told to the worker), result, error. */
static void
helper_line(HelperRun *h, const char *line)
{
	json_error_t jerr;
	json_t	   *j = line[0] == '{' ? json_loads(line, 0, &jerr) : NULL;
	json_t	   *v;

	if (j == NULL)
		return;
	if ((v = json_object_get(j, "result")) != NULL && json_is_object(v))
		h->result = json_incref(v);
	else if ((v = json_object_get(j, "error")) != NULL && json_is_object(v))
	{
		const char *m = json_string_value(json_object_get(v, "message"));

		h->error = strdup(m ? m : "hagen-compile failed");
		h->error_segment = (int) json_integer_value(json_object_get(v, "segment"));
	}
	else if ((v = json_object_get(j, "progress")) != NULL && json_is_number(v))
	{
		double		f = json_number_value(v);

		if (json_integer_value(json_object_get(j, "segment")) > 0)
			h->segment = (int) json_integer_value(json_object_get(j, "segment"));
		if (f >= 0 && f <= 1)
			tell(json_pack("{s:f}", "progress", f));
	}
	json_decref(j);
}

/* Runs hagen-compile compile on the manifest in the job's directory. */
static void
run_helper(const WkJobSpec *spec, const char *manifest_rel, const char *log_path, int timeout_s,
		   HelperRun *h)
{
	int			pipefd[2];
	pid_t		pid;
	pid_t		me = getpid();
	double		deadline = wk_now() + timeout_s;
	char	   *line = malloc(MAX_LINE + 1);
	size_t		len = 0;
	char		buf[8192];

	memset(h, 0, sizeof(*h));
	if (pipe(pipefd) != 0)
		fail(0, "could not create a pipe for hagen-compile: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		fail(0, "could not start hagen-compile: %s", strerror(errno));
	if (pid == 0)
		exec_helper(spec->self, manifest_rel, log_path, timeout_s, me, pipefd[1]);
	close(pipefd[1]);
	for (;;)
	{
		struct pollfd p = {.fd = pipefd[0],.events = POLLIN};
		double		left = deadline - wk_now();
		ssize_t		n;

		if (left <= 0)
		{
			kill(pid, SIGKILL);
			h->timed_out = true;
			break;
		}
		if (poll(&p, 1, (int) (left > 1 ? 1000 : left * 1000 + 1)) <= 0)
			continue;
		n = read(pipefd[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
		{
			if (buf[i] != '\n')
			{
				if (len < MAX_LINE)
					line[len++] = buf[i];
				continue;
			}
			line[len] = '\0';
			helper_line(h, line);
			len = 0;
		}
	}
	close(pipefd[0]);
	while (waitpid(pid, &h->wstatus, 0) < 0 && errno == EINTR)
		;
	free(line);
}

/* Writes the manifest where the helper reads it. */
static void
write_manifest(json_t *manifest, const char *path)
{
	if (json_dump_file(manifest, path, JSON_COMPACT) != 0)
		fail(0, "could not write %s: %s", path, strerror(errno));
}

/* Creates a directory and those above it (relative to the current one). */
static void
make_dirs(const char *rel)
{
	char	   *p = strdup(rel);

	for (char *s = p;; s++)
	{
		if (*s == '/' || *s == '\0')
		{
			char		c = *s;

			*s = '\0';
			if (mkdir(p, 0700) != 0 && errno != EEXIST)
				fail(0, "could not create %s: %s", p, strerror(errno));
			*s = c;
			if (c == '\0')
				break;
		}
	}
	free(p);
}

void
wk_run_job(const WkJobSpec *spec)
{
	json_t	   *effect = spec->effect;
	const char *dir = json_string_value(json_object_get(effect, "dir"));
	json_t	   *manifest = json_object_get(effect, "manifest");
	json_int_t	timeout_ms = json_integer_value(json_object_get(effect, "timeout_ms"));
	json_int_t	urls_s = json_integer_value(json_object_get(effect, "urls_expire_in"));
	double		started = wk_now();
	/* A transfer under way may outlive its URL's expiry a little. */
	double		deadline = started + (urls_s > 0 ? urls_s : 3600) + 60;
	WkFile	   *inputs;
	WkFile	   *outputs;
	int			ninputs;
	int			noutputs;
	long long	down = 0;
	long long	up = 0;
	double		t_down;
	double		t_compile;
	double		t_up;
	WkTransferError err;
	HelperRun	h;
	char	   *manifest_rel;
	char	   *log_path;
	const char *bad;

	job_id = spec->job_id;
	out_fd = spec->out_fd;
	memset(&err, 0, sizeof(err));
	if (chdir(spec->dir) != 0)
		fail(0, "could not enter the job's directory %s: %s", spec->dir, strerror(errno));
	if (!json_is_object(effect) || strcmp(json_string_value(json_object_get(effect, "type")) ?
											json_string_value(json_object_get(effect, "type")) : "", "compile") != 0)
		fail(0, "a compile worker cannot carry out this effect (its type is not \"compile\")");
	if (!safe_path(dir) || !json_is_object(manifest))
		fail(0, "the compile effect lacks a dir inside the job's directory or a manifest");
	if ((bad = unsafe_manifest_path(manifest)) != NULL)
		fail(0, "the manifest names \"%s\", which is not a path inside the job's directory", bad);
	if (timeout_ms <= 0)
		timeout_ms = 1800 * 1000;
	inputs = read_files(effect, "inputs", &ninputs);
	outputs = read_files(effect, "outputs", &noutputs);
	wk_transfer_init();

	/* 1. The inputs. */
	if (!wk_download_all(inputs, ninputs, deadline, &down, &err))
		fail_transfer(&err);
	t_down = wk_now() - started;
	wk_log("job %lld: %d input(s), %.1f MB downloaded in %.2f s", (long long) job_id, ninputs,
		   down / 1048576.0, t_down);

	/* 2. The helper. */
	make_dirs(dir);
	manifest_rel = malloc(strlen(dir) + 20);
	log_path = malloc(strlen(dir) + 20);
	sprintf(manifest_rel, "%s/manifest.json", dir);
	sprintf(log_path, "%s/compile.log", dir);
	write_manifest(manifest, manifest_rel);
	t_compile = wk_now();
	run_helper(spec, manifest_rel, log_path, (int) ((timeout_ms + 999) / 1000), &h);
	t_compile = wk_now() - t_compile;
	if (h.timed_out)
		fail(h.segment, "hagen-compile took longer than its time limit (%lld s)%s%s",
			 (long long) ((timeout_ms + 999) / 1000), h.segment > 0 ? ", while on " : "",
			 h.segment > 0 ? segment_name(manifest, h.segment) : "");
	if (WIFSIGNALED(h.wstatus))
		fail(h.segment, "hagen-compile crashed (signal %d: %s)%s%s", WTERMSIG(h.wstatus),
			 strsignal(WTERMSIG(h.wstatus)), h.segment > 0 ? " while on " : "",
			 h.segment > 0 ? segment_name(manifest, h.segment) : "");
	if (h.error)
		fail(h.error_segment, "%s", h.error);
	if (WEXITSTATUS(h.wstatus) == 127)
		fail(0, "could not run the compile helper \"%s\"", spec->self);
	if (WEXITSTATUS(h.wstatus) != 0 || h.result == NULL)
		fail(0, "hagen-compile exited with status %d without a result", WEXITSTATUS(h.wstatus));
	wk_log("job %lld: hagen-compile done in %.2f s (%s mode, %.3f s of video)", (long long) job_id,
		   t_compile, json_string_value(json_object_get(h.result, "mode")) ?
		   json_string_value(json_object_get(h.result, "mode")) : "?",
		   json_number_value(json_object_get(h.result, "duration")));

	/* 3. The outputs. */
	t_up = wk_now();
	for (int i = 0; i < noutputs; i++)
	{
		json_t	   *o = json_array_get(json_object_get(effect, "outputs"), i);
		json_int_t	max = json_integer_value(json_object_get(o, "max_bytes"));
		struct stat st;

		if (max > 0 && stat(outputs[i].path, &st) == 0 && st.st_size > max)
			fail(0, "%s is %lld bytes, more than one upload may carry (%lld)", outputs[i].key,
				 (long long) st.st_size, (long long) max);
		if (!wk_upload(&outputs[i], deadline, &up, &err))
			fail_transfer(&err);
	}
	t_up = wk_now() - t_up;
	wk_log("job %lld: %d output(s), %.1f MB stored in %.2f s", (long long) job_id, noutputs,
		   up / 1048576.0, t_up);
	finish(json_pack("{s:s,s:O,s:b,s:{s:I,s:I,s:I,s:I,s:I}}", "status", "ok", "result", h.result,
					 "uploaded", 1, "stats",
					 "download_bytes", (json_int_t) down, "download_ms", (json_int_t) (t_down * 1000),
					 "compile_ms", (json_int_t) (t_compile * 1000),
					 "upload_bytes", (json_int_t) up, "upload_ms", (json_int_t) (t_up * 1000)));
}
