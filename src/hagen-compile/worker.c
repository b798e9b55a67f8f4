/*
 * worker.c: `hagen-compile worker`, a compile worker for any host.
 *
 *   hagen-compile worker --dsn CONNINFO [--jobs N] [--name NAME]
 *                        [--work-dir DIR] [--grace SECONDS]
 *
 * A long-running process that carries out the jobs of the compile lane of
 * a hagenkit database, like the compile workers inside the server, but on
 * its own host: it claims jobs with hagen.worker_claim (its role needs
 * hagen_worker), runs each in a job runner of its own (worker_job.c: the
 * inputs through presigned GET URLs, `hagen-compile compile`, the outputs
 * through presigned PUT URLs), sends a heartbeat for each every 2 s with
 * the helper's fraction, and completes each with its lease token.  It
 * waits on LISTEN hagen_compile, with a timer from hagen.worker_next_due()
 * (at most 15 s) as a safety net.  When the connection fails or is lost
 * (a database restarting, a wrong password, a dropped session) it keeps its
 * jobs running and connects again with back-off; the lease token decides
 * whether what they did still counts.
 *
 * SIGTERM (or SIGINT): no more claims; the jobs under way finish, then it
 * exits.  A second SIGTERM, or --grace seconds (default 600) after the
 * first, hands the jobs under way back (hagen.worker_release: queued again
 * at once, the attempt not counted) and exits.  A heartbeat answering false
 * (the job canceled, or taken over after the lease ran out) stops that job.
 *
 * One line per event on stderr; never a URL, a password or a DSN.
 */
/* nftw */
#define _GNU_SOURCE

#include "worker.h"
#include "hc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#define MAX_JOBS 64
#define IDLE_S 15.0
#define MIN_CLAIM_GAP_S 0.25
#define HANDBACK_WAIT_S 15.0

const char *wk_name = "worker";

/* A job under way (or ended, waiting to be reported). */
typedef struct Job
{
	bool		used;
	int64_t		id;
	int64_t		token;
	pid_t		runner;			/* 0 once reaped */
	int			fd;				/* from the runner, -1 once closed */
	char	   *dir;
	char		line[65536];
	size_t		len;
	double		fraction;		/* -1: none yet */
	bool		fraction_new;
	double		last_heartbeat;
	double		deadline;		/* the runner is stopped then */
	json_t	   *outcome;		/* what the runner said, or why it was stopped */
	const char *stopped;		/* why the worker stopped it, or NULL */
	bool		hand_back;		/* release instead of complete */
	double		report_at;		/* when to try reporting again */
	double		report_backoff;
} Job;

static Job	jobs[MAX_JOBS];
static int	max_jobs = 1;
static volatile sig_atomic_t terms = 0;
static int	sig_pipe[2] = {-1, -1};

/* ---------------------------------------------------------------- helpers */

void
wk_log(const char *fmt,...)
{
	char		msg[4096];
	char		stamp[32];
	struct timespec ts;
	struct tm	tm;
	va_list		ap;
	int			n;

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	n = snprintf(msg, sizeof(msg), "%s.%03ld hagen-compile worker %s[%d]: ", stamp,
				 ts.tv_nsec / 1000000, wk_name, (int) getpid());
	va_start(ap, fmt);
	n += vsnprintf(msg + n, sizeof(msg) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int) sizeof(msg) - 2)
		n = sizeof(msg) - 2;
	msg[n++] = '\n';
	/* One write per line, so that the lines of runners do not mix. */
	if (write(2, msg, n) < 0)
		return;
}

double
wk_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A random 50 to 100 % of seconds, so that many workers do not act together. */
double
wk_jitter(double seconds)
{
	return seconds * (0.5 + 0.5 * (random() / (double) RAND_MAX));
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
	(void) st;
	(void) flag;
	(void) f;
	return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

bool
wk_remove_tree(const char *path)
{
	return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 || errno == ENOENT;
}

static void
on_term(int sig)
{
	int			saved = errno;

	(void) sig;
	terms++;
	if (write(sig_pipe[1], "t", 1) < 0)
	{
		/* the pipe is full: a wake-up is pending anyway */
	}
	errno = saved;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: hagen-compile worker --dsn CONNINFO [--jobs N] [--name NAME] [--work-dir DIR] [--grace SECONDS]\n"
			"  --dsn       libpq connection string or URI of the hagenkit database (or HAGEN_WORKER_DSN);\n"
			"              its role needs hagen_worker; keep passwords in ~/.pgpass or PGPASSWORD\n"
			"  --jobs      compiles at once (1 to %d, default 1)\n"
			"  --name      how the worker is listed in hagen.compile_workers (default: the host name)\n"
			"  --work-dir  where its jobs' files live (default: $TMPDIR or /var/tmp, in hagen-compile-worker/NAME)\n"
			"  --grace     seconds a SIGTERM waits for jobs under way before handing them back (default 600)\n",
			MAX_JOBS);
}

/*
 * The worker's own directory under the work directory, locked for as long
 * as it runs (two workers with one name would remove each other's files),
 * emptied of what a worker killed before left.
 */
static char *
own_directory(const char *work_dir)
{
	char	   *base = malloc(strlen(work_dir) + strlen(wk_name) + 40);
	char	   *lock = malloc(strlen(work_dir) + strlen(wk_name) + 60);
	int			fd;
	DIR		   *d;
	struct dirent *e;

	if (mkdir(work_dir, 0700) != 0 && errno != EEXIST)
	{
		fprintf(stderr, "hagen-compile worker: could not create --work-dir %s: %s\n", work_dir, strerror(errno));
		exit(1);
	}
	sprintf(base, "%s/hagen-compile-worker", work_dir);
	if (mkdir(base, 0700) != 0 && errno != EEXIST)
	{
		fprintf(stderr, "hagen-compile worker: could not create %s: %s\n", base, strerror(errno));
		exit(1);
	}
	sprintf(base, "%s/hagen-compile-worker/%s", work_dir, wk_name);
	if (mkdir(base, 0700) != 0 && errno != EEXIST)
	{
		fprintf(stderr, "hagen-compile worker: could not create %s: %s\n", base, strerror(errno));
		exit(1);
	}
	sprintf(lock, "%s/.lock", base);
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0)
	{
		fprintf(stderr, "hagen-compile worker: another worker named \"%s\" uses %s; give each worker of a host its own --name\n",
				wk_name, base);
		exit(1);
	}
	/* fd stays open: the lock lasts as long as this process. */
	if ((d = opendir(base)) != NULL)
	{
		while ((e = readdir(d)) != NULL)
		{
			if (strncmp(e->d_name, "job_", 4) == 0)
			{
				char	   *p = malloc(strlen(base) + strlen(e->d_name) + 2);

				sprintf(p, "%s/%s", base, e->d_name);
				wk_remove_tree(p);
				free(p);
			}
		}
		closedir(d);
	}
	free(lock);
	return base;
}

/* ---------------------------------------------------------------- jobs */

static int
active_jobs(void)
{
	int			n = 0;

	for (int i = 0; i < max_jobs; i++)
		n += jobs[i].used;
	return n;
}

/* Forks the runner of a claimed job. */
static void
start_job(const char *base, const char *self, int64_t id, int64_t token, json_t *effect)
{
	Job		   *j = NULL;
	int			p[2];
	pid_t		parent = getpid();
	json_int_t	urls_s = json_integer_value(json_object_get(effect, "urls_expire_in"));

	for (int i = 0; i < max_jobs; i++)
		if (!jobs[i].used)
		{
			j = &jobs[i];
			break;
		}
	memset(j, 0, sizeof(*j));
	j->used = true;
	j->id = id;
	j->token = token;
	j->fd = -1;
	j->fraction = -1;
	j->last_heartbeat = wk_now();
	j->deadline = wk_now() + (urls_s > 0 ? urls_s : 3600) + 120;
	j->dir = malloc(strlen(base) + 64);
	sprintf(j->dir, "%s/job_%lld_XXXXXX", base, (long long) id);
	wk_log("job %lld: claimed (%zu input(s), %zu output(s))", (long long) id,
		   json_array_size(json_object_get(effect, "inputs")), json_array_size(json_object_get(effect, "outputs")));
	if (mkdtemp(j->dir) == NULL || pipe(p) != 0)
	{
		j->outcome = json_pack("{s:s,s:s}", "status", "error", "error", "the worker could not prepare a directory for the job");
		wk_log("job %lld: could not create %s: %s", (long long) id, j->dir, strerror(errno));
		return;
	}
	fflush(NULL);
	j->runner = fork();
	if (j->runner < 0)
	{
		close(p[0]);
		close(p[1]);
		j->runner = 0;
		j->outcome = json_pack("{s:s,s:s}", "status", "error", "error", "the worker could not start a job runner");
		return;
	}
	if (j->runner == 0)
	{
		WkJobSpec	spec;

		/* The runner: dies with the worker, in a process group of its own
		 * (the worker stops a job by killing that group), holding nothing
		 * of the worker's but its pipe (above all not the database socket). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(1);
		setpgid(0, 0);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGPIPE, SIG_IGN);
		for (int fd = 3; fd < 1024; fd++)
			if (fd != p[1])
				close(fd);
		spec.job_id = id;
		spec.effect = effect;
		spec.dir = j->dir;
		spec.self = self;
		spec.out_fd = p[1];
		wk_run_job(&spec);
	}
	setpgid(j->runner, j->runner);
	close(p[1]);
	j->fd = p[0];
	fcntl(j->fd, F_SETFL, O_NONBLOCK);
	fcntl(j->fd, F_SETFD, FD_CLOEXEC);
}

/* Stops a job's runner (and its helper) at once, saying why. */
static void
stop_job(Job *j, const char *why)
{
	if (j->stopped == NULL)
		j->stopped = why;
	if (j->runner > 0)
		kill(-j->runner, SIGKILL);
}

/* A line from a runner: progress, or its outcome. */
static void
runner_line(Job *j, const char *line)
{
	json_error_t jerr;
	json_t	   *v = json_loads(line, 0, &jerr);
	json_t	   *x;

	if (v == NULL)
		return;
	if ((x = json_object_get(v, "progress")) != NULL && json_is_number(x))
	{
		if (json_number_value(x) != j->fraction)
		{
			j->fraction = json_number_value(x);
			j->fraction_new = true;
		}
	}
	else if ((x = json_object_get(v, "outcome")) != NULL && json_is_object(x))
	{
		json_decref(j->outcome);
		j->outcome = json_incref(x);
	}
	json_decref(v);
}

/* Reads what a runner wrote; at its end, reaps it and settles the outcome. */
static void
read_runner(Job *j)
{
	char		buf[8192];
	ssize_t		n;

	while ((n = read(j->fd, buf, sizeof(buf))) > 0)
	{
		for (ssize_t i = 0; i < n; i++)
		{
			if (buf[i] != '\n')
			{
				if (j->len < sizeof(j->line) - 1)
					j->line[j->len++] = buf[i];
				continue;
			}
			j->line[j->len] = '\0';
			runner_line(j, j->line);
			j->len = 0;
		}
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	/* EOF: the runner has ended (or is ending). */
	close(j->fd);
	j->fd = -1;
	{
		int			st = 0;

		while (waitpid(j->runner, &st, 0) < 0 && errno == EINTR)
			;
		/* Anything left in its group (a helper) goes with it. */
		kill(-j->runner, SIGKILL);
		j->runner = 0;
		if (j->stopped)
		{
			json_decref(j->outcome);
			j->outcome = json_pack("{s:s,s:s}", "status", "error", "error", j->stopped);
		}
		else if (j->outcome == NULL)
		{
			char		why[200];

			if (WIFSIGNALED(st))
				snprintf(why, sizeof(why), "the job runner was killed (signal %d: %s)", WTERMSIG(st),
						 strsignal(WTERMSIG(st)));
			else
				snprintf(why, sizeof(why), "the job runner exited with status %d without an outcome",
						 WEXITSTATUS(st));
			wk_log("job %lld: %s", (long long) j->id, why);
			j->outcome = json_pack("{s:s,s:s}", "status", "error", "error", why);
		}
	}
	wk_remove_tree(j->dir);
}

/* Reports an ended job; the slot is free once the database has it. */
static void
report_job(WkDb *db, Job *j)
{
	WkResult	rc;

	if (j->hand_back)
	{
		bool		released = false;

		rc = wk_db_release(db, j->id, j->token, &released);
		if (rc == WK_OK)
			wk_log("job %lld: %s", (long long) j->id, released ? "handed back: queued again" :
				   "not handed back: it was no longer this worker's");
	}
	else
	{
		char	   *answer = NULL;
		const char *status = json_string_value(json_object_get(j->outcome, "status"));

		rc = wk_db_complete(db, j->id, j->token, j->outcome, &answer);
		if (rc == WK_OK)
			wk_log("job %lld: %s %s", (long long) j->id,
				   status && strcmp(status, "ok") == 0 ? "completed:" : "reported its failure:",
				   answer && strcmp(answer, "stale") == 0 ?
				   "stale (the job was no longer this worker's; its outcome was dropped)" : answer);
		free(answer);
	}
	if (rc == WK_LOST)
		return;					/* reported once connected again */
	if (rc == WK_FAILED && db->last_sqlstate && strcmp(db->last_sqlstate, "42501") == 0)
	{
		/* The role lost hagen_worker: kept until someone grants it again. */
		j->report_backoff = j->report_backoff <= 0 ? 1 : j->report_backoff * 2 > 30 ? 30 : j->report_backoff * 2;
		j->report_at = wk_now() + wk_jitter(j->report_backoff);
		return;
	}
	/* Any other refusal is not sent again. */
	json_decref(j->outcome);
	free(j->dir);
	memset(j, 0, sizeof(*j));
	j->fd = -1;
}

/* ---------------------------------------------------------------- main */

int
hc_worker_main(int argc, char **argv)
{
	static struct option opts[] = {
		{"dsn", required_argument, NULL, 'd'},
		{"jobs", required_argument, NULL, 'j'},
		{"name", required_argument, NULL, 'n'},
		{"work-dir", required_argument, NULL, 'w'},
		{"grace", required_argument, NULL, 'g'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	const char *dsn = getenv("HAGEN_WORKER_DSN");
	const char *work_dir = getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/var/tmp";
	char		host[HOST_NAME_MAX + 1];
	char		self[PATH_MAX];
	double		grace = 600;
	char	   *base;
	ssize_t		n;
	int			c;
	WkDb		db;
	bool		claim_now = true;
	double		next_claim = 0;
	double		claim_backoff = 0;
	int			handled_terms = 0;
	double		stop_deadline = 0;
	double		handback_deadline = 0;

	if (gethostname(host, sizeof(host)) == 0 && host[0])
		wk_name = strdup(host);
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
	{
		char	   *end;

		switch (c)
		{
			case 'd':
				dsn = optarg;
				break;
			case 'j':
				max_jobs = (int) strtol(optarg, &end, 10);
				if (*end || max_jobs < 1 || max_jobs > MAX_JOBS)
				{
					fprintf(stderr, "hagen-compile worker: --jobs must be 1 to %d, not \"%s\"\n", MAX_JOBS, optarg);
					return 2;
				}
				break;
			case 'n':
				wk_name = optarg;
				break;
			case 'w':
				work_dir = optarg;
				break;
			case 'g':
				grace = strtod(optarg, &end);
				if (*end || !(grace >= 0))
				{
					fprintf(stderr, "hagen-compile worker: --grace must be a number of seconds, not \"%s\"\n", optarg);
					return 2;
				}
				break;
			case 'h':
				usage();
				return 0;
			default:
				usage();
				return 2;
		}
	}
	if (optind < argc || dsn == NULL)
	{
		if (dsn == NULL)
			fprintf(stderr, "hagen-compile worker: no --dsn (or HAGEN_WORKER_DSN) given\n");
		usage();
		return 2;
	}
	if (!wk_db_check_dsn(dsn))
		return 2;
	for (const char *p = wk_name; *p; p++)
		if (*p <= ' ' || *p == '/' || *p == 0x7f || p - wk_name >= 100)
		{
			fprintf(stderr, "hagen-compile worker: --name must be 1 to 100 printable characters without spaces or \"/\", not \"%s\"\n",
					wk_name);
			return 2;
		}
	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) <= 0)
	{
		fprintf(stderr, "hagen-compile worker: could not find its own executable: %s\n", strerror(errno));
		return 1;
	}
	self[n] = '\0';
	base = own_directory(work_dir);
	srandom((unsigned) (getpid() ^ time(NULL)));

	if (pipe(sig_pipe) != 0)
		return 1;
	fcntl(sig_pipe[0], F_SETFL, O_NONBLOCK);
	fcntl(sig_pipe[1], F_SETFL, O_NONBLOCK);
	fcntl(sig_pipe[0], F_SETFD, FD_CLOEXEC);
	fcntl(sig_pipe[1], F_SETFD, FD_CLOEXEC);
	{
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_term;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		signal(SIGPIPE, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
	}
	for (int i = 0; i < MAX_JOBS; i++)
		jobs[i].fd = -1;
	memset(&db, 0, sizeof(db));
	db.dsn = dsn;
	wk_log("started: %d job(s) at once, files in %s", max_jobs, base);

	for (;;)
	{
		struct pollfd fds[MAX_JOBS + 2];
		Job		   *owner[MAX_JOBS + 2];
		int			nfds = 0;
		double		now = wk_now();
		double		wake = now + IDLE_S;
		bool		stopping = handled_terms > 0;

		/* Signals: the first stops claiming, the second hands back. */
		if (terms != handled_terms)
		{
			handled_terms = terms;
			if (handled_terms == 1)
			{
				stop_deadline = now + grace;
				wk_log("SIGTERM: no more claims; %d job(s) under way finish (or are handed back after %.0f s, or at a second SIGTERM)",
					   active_jobs(), grace);
			}
			stopping = true;
		}
		if (stopping && handback_deadline == 0 && (handled_terms >= 2 || now >= stop_deadline) && active_jobs() > 0)
		{
			wk_log("handing back %d job(s) under way", active_jobs());
			handback_deadline = now + HANDBACK_WAIT_S;
			for (int i = 0; i < max_jobs; i++)
				if (jobs[i].used && jobs[i].outcome == NULL)
				{
					jobs[i].hand_back = true;
					stop_job(&jobs[i], "handed back");
				}
		}
		if (handback_deadline > 0 && now >= handback_deadline)
		{
			wk_log("could not hand back every job (no database): their leases run out by themselves");
			break;
		}

		/* The database: connect, report, heartbeats, claims. */
		if (db.conn == NULL && now >= db.next_attempt)
		{
			if (wk_db_connect(&db))
				claim_now = true;
		}
		for (int i = 0; i < max_jobs && db.conn; i++)
			if (jobs[i].used && jobs[i].runner == 0 && jobs[i].outcome && now >= jobs[i].report_at)
			{
				report_job(&db, &jobs[i]);
				claim_now = true;
			}
		for (int i = 0; i < max_jobs && db.conn; i++)
		{
			Job		   *j = &jobs[i];
			bool		keep = true;

			if (!j->used || j->runner == 0 || j->stopped || now - j->last_heartbeat < WK_HEARTBEAT_S)
				continue;
			j->last_heartbeat = now;
			if (wk_db_heartbeat(&db, j->id, j->token, j->fraction_new ? j->fraction : -1, &keep) == WK_OK)
			{
				j->fraction_new = false;
				if (!keep)
				{
					wk_log("job %lld: stopped: canceled, or taken over by another worker", (long long) j->id);
					stop_job(j, "stopped: the job was canceled or taken over by another worker");
				}
			}
		}
		for (int i = 0; i < max_jobs; i++)
			if (jobs[i].used && jobs[i].runner > 0 && !jobs[i].stopped && now >= jobs[i].deadline)
			{
				wk_log("job %lld: stopped: it outlived its presigned URLs", (long long) jobs[i].id);
				stop_job(&jobs[i], "the job took longer than its presigned URLs live");
			}
		/* A notification claims at once, unless claims are failing. */
		if (db.conn && !stopping && active_jobs() < max_jobs &&
			((claim_now && claim_backoff <= 0) || now >= next_claim))
		{
			json_t	   *claims = NULL;
			WkResult	rc = wk_db_claim(&db, max_jobs - active_jobs(), &claims);
			long		due = -1;

			claim_now = false;
			if (rc == WK_OK)
			{
				size_t		i;
				json_t	   *cl;
				int			got = (int) json_array_size(claims);
				int			wanted = max_jobs - active_jobs();

				claim_backoff = 0;
				json_array_foreach(claims, i, cl)
				{
					start_job(base, self, json_integer_value(json_object_get(cl, "job_id")),
							  json_integer_value(json_object_get(cl, "token")),
							  json_object_get(cl, "effect"));
				}
				if (got < wanted && wk_db_next_due(&db, &due) == WK_OK)
				{
					double		s = due < 0 ? IDLE_S : due / 1000.0;

					next_claim = wk_now() + (s < MIN_CLAIM_GAP_S ? MIN_CLAIM_GAP_S : s > IDLE_S ? IDLE_S : s);
				}
				else
					next_claim = wk_now() + (got < wanted ? MIN_CLAIM_GAP_S : IDLE_S);
			}
			else if (rc == WK_FAILED)
			{
				claim_backoff = claim_backoff <= 0 ? 1 : claim_backoff * 2 > 30 ? 30 : claim_backoff * 2;
				next_claim = wk_now() + wk_jitter(claim_backoff);
				wk_log("next claim in %.1f s", next_claim - wk_now());
			}
			json_decref(claims);
		}
		if (stopping && active_jobs() == 0)
			break;

		/* Wait for a runner, the database, a signal or the next timer. */
		now = wk_now();
		fds[nfds].fd = sig_pipe[0];
		fds[nfds].events = POLLIN;
		owner[nfds++] = NULL;
		if (db.conn)
		{
			fds[nfds].fd = wk_db_socket(&db);
			fds[nfds].events = POLLIN;
			owner[nfds++] = NULL;
			if (!stopping && active_jobs() < max_jobs && next_claim < wake)
				wake = next_claim;
		}
		else if (db.next_attempt < wake)
			wake = db.next_attempt;
		for (int i = 0; i < max_jobs; i++)
		{
			Job		   *j = &jobs[i];

			if (!j->used)
				continue;
			if (j->fd >= 0)
			{
				fds[nfds].fd = j->fd;
				fds[nfds].events = POLLIN;
				owner[nfds++] = j;
			}
			if (j->runner > 0 && j->last_heartbeat + WK_HEARTBEAT_S < wake)
				wake = j->last_heartbeat + WK_HEARTBEAT_S;
			if (j->runner == 0 && j->outcome && db.conn && j->report_at < wake)
				wake = j->report_at > now ? j->report_at : now;
			if (j->runner > 0 && !j->stopped && j->deadline < wake)
				wake = j->deadline;
		}
		if (stopping && handback_deadline == 0 && stop_deadline < wake)
			wake = stop_deadline;
		if (handback_deadline > 0 && handback_deadline < wake)
			wake = handback_deadline;
		if (poll(fds, nfds, wake > now ? (int) ((wake - now) * 1000) + 1 : 0) < 0 && errno != EINTR)
		{
			wk_log("poll failed: %s", strerror(errno));
			sleep(1);
			continue;
		}
		for (int i = 0; i < nfds; i++)
		{
			if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (fds[i].fd == sig_pipe[0])
			{
				char		b[64];

				while (read(sig_pipe[0], b, sizeof(b)) > 0)
					;
			}
			else if (owner[i])
				read_runner(owner[i]);
			else if (db.conn && fds[i].fd == wk_db_socket(&db))
				wk_db_poll(&db, &claim_now);
		}
	}
	/* Jobs whose leases run out by themselves: their runners are killed. */
	for (int i = 0; i < max_jobs; i++)
		if (jobs[i].used && jobs[i].runner > 0)
		{
			kill(-jobs[i].runner, SIGKILL);
			waitpid(jobs[i].runner, NULL, 0);
			wk_remove_tree(jobs[i].dir);
		}
	wk_db_drop_quietly(&db);
	wk_log("stopped");
	return 0;
}
