/*
 * worker_loop.c: the loop of `hagen-compile worker` (worker.c has its
 * options): the jobs under way, each in a job runner of its own
 * (worker_job.c), and one round after another of
 *   - signals: the first SIGTERM stops claiming, a second one (or --grace
 *     seconds) hands the jobs under way back;
 *   - the database: connect (with back-off), report what ended
 *     (worker_complete, or worker_release for a job handed back), a
 *     heartbeat per running job every 2 s with the helper's fraction (a
 *     false one stops that job), claims for the free slots;
 *   - a wait on the runners' pipes, the database socket (notifications on
 *     hagen_compile) and a signal pipe, until the next timer: a heartbeat,
 *     the next claim (worker_next_due(), at most 15 s), a reconnection.
 * An ended job keeps its slot until the database has its outcome: a job
 * that ended while the connection was down is reported once it is back.
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define IDLE_S 15.0
#define MIN_CLAIM_GAP_S 0.25
#define HANDBACK_WAIT_S 15.0
#define MAX_JOBS WK_MAX_JOBS
#define MAX_LINE (16 * 1024 * 1024)

/* A job under way (or ended, waiting to be reported). */
typedef struct Job
{
	bool		used;
	int64_t		id;
	int64_t		token;
	pid_t		runner;			/* 0 once reaped */
	int			fd;				/* from the runner, -1 once closed */
	char	   *dir;
	char	   *line;			/* what the runner wrote since its last newline */
	size_t		len;
	size_t		cap;
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
	if (j == NULL)
	{
		/* Never: claims ask for the free slots only.  The lease runs out. */
		wk_log("job %lld: claimed with no free slot; left to its lease", (long long) id);
		return;
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
				/* An outcome carries the helper's result: up to 1000 segments. */
				if (j->len + 1 >= j->cap && j->cap < MAX_LINE)
				{
					j->cap = j->cap ? j->cap * 2 : 8192;
					j->line = realloc(j->line, j->cap);
				}
				if (j->len + 1 < j->cap)
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
	free(j->line);
	memset(j, 0, sizeof(*j));
	j->fd = -1;
}

/* ---------------------------------------------------------------- the loop */

/* What the loop keeps between rounds. */
typedef struct Loop
{
	WkDb		db;
	const char *base;			/* the worker's own directory */
	const char *self;			/* this executable */
	double		grace;
	bool		claim_now;		/* a notification came, or a slot freed */
	double		next_claim;
	double		claim_backoff;	/* seconds, while claims fail */
	int			handled_terms;
	double		stop_deadline;	/* the first SIGTERM plus --grace */
	double		handback_deadline;	/* when to give up handing back */
} Loop;

/* SIGTERM: the first stops claiming, the second (or --grace) hands back. */
static void
handle_signals(Loop *l, double now)
{
	if (terms != l->handled_terms)
	{
		l->handled_terms = terms;
		if (l->handled_terms == 1)
		{
			l->stop_deadline = now + l->grace;
			wk_log("SIGTERM: no more claims; %d job(s) under way finish (or are handed back after %.0f s, or at a second SIGTERM)",
				   active_jobs(), l->grace);
		}
	}
	if (l->handled_terms > 0 && l->handback_deadline == 0 && active_jobs() > 0 &&
		(l->handled_terms >= 2 || now >= l->stop_deadline))
	{
		wk_log("handing back %d job(s) under way", active_jobs());
		l->handback_deadline = now + HANDBACK_WAIT_S;
		for (int i = 0; i < max_jobs; i++)
			if (jobs[i].used && jobs[i].outcome == NULL)
			{
				jobs[i].hand_back = true;
				stop_job(&jobs[i], "handed back");
			}
	}
}

/* Heartbeats of running jobs, every WK_HEARTBEAT_S; a false one stops its job. */
static void
send_heartbeats(Loop *l, double now)
{
	for (int i = 0; i < max_jobs && l->db.conn; i++)
	{
		Job		   *j = &jobs[i];
		bool		keep = true;

		if (!j->used || j->runner == 0 || j->stopped || now - j->last_heartbeat < WK_HEARTBEAT_S)
			continue;
		j->last_heartbeat = now;
		if (wk_db_heartbeat(&l->db, j->id, j->token, j->fraction_new ? j->fraction : -1, &keep) != WK_OK)
			continue;
		j->fraction_new = false;
		if (!keep)
		{
			wk_log("job %lld: stopped: canceled, or taken over by another worker", (long long) j->id);
			stop_job(j, "stopped: the job was canceled or taken over by another worker");
		}
	}
	for (int i = 0; i < max_jobs; i++)
		if (jobs[i].used && jobs[i].runner > 0 && !jobs[i].stopped && now >= jobs[i].deadline)
		{
			wk_log("job %lld: stopped: it outlived its presigned URLs", (long long) jobs[i].id);
			stop_job(&jobs[i], "the job took longer than its presigned URLs live");
		}
}

/*
 * Claims as many jobs as there are free slots, when notified (unless claims
 * are failing) or when the timer from worker_next_due() says so.
 */
static void
claim(Loop *l, double now)
{
	int			wanted = max_jobs - active_jobs();
	json_t	   *claims = NULL;
	WkResult	rc;

	if (l->db.conn == NULL || l->handled_terms > 0 || wanted <= 0 ||
		!((l->claim_now && l->claim_backoff <= 0) || now >= l->next_claim))
		return;
	l->claim_now = false;
	rc = wk_db_claim(&l->db, wanted, &claims);
	if (rc == WK_OK)
	{
		size_t		i;
		json_t	   *c;
		int			got = (int) json_array_size(claims);
		long		due = -1;

		l->claim_backoff = 0;
		json_array_foreach(claims, i, c)
			start_job(l->base, l->self, json_integer_value(json_object_get(c, "job_id")),
					  json_integer_value(json_object_get(c, "token")), json_object_get(c, "effect"));
		if (got < wanted && wk_db_next_due(&l->db, &due) == WK_OK)
		{
			double		s = due < 0 ? IDLE_S : due / 1000.0;

			l->next_claim = wk_now() + (s < MIN_CLAIM_GAP_S ? MIN_CLAIM_GAP_S : s > IDLE_S ? IDLE_S : s);
		}
		else
			l->next_claim = wk_now() + (got < wanted ? MIN_CLAIM_GAP_S : IDLE_S);
	}
	else if (rc == WK_FAILED)
	{
		l->claim_backoff = l->claim_backoff <= 0 ? 1 : l->claim_backoff * 2 > 30 ? 30 : l->claim_backoff * 2;
		l->next_claim = wk_now() + wk_jitter(l->claim_backoff);
		wk_log("next claim in %.1f s", l->next_claim - wk_now());
	}
	json_decref(claims);
}

/* Waits for a runner, the database, a signal or the next timer. */
static void
wait_for_events(Loop *l)
{
	struct pollfd fds[MAX_JOBS + 2];
	Job		   *owner[MAX_JOBS + 2];
	int			nfds = 0;
	double		now = wk_now();
	double		wake = now + IDLE_S;

	fds[nfds].fd = sig_pipe[0];
	fds[nfds].events = POLLIN;
	owner[nfds++] = NULL;
	if (l->db.conn)
	{
		fds[nfds].fd = wk_db_socket(&l->db);
		fds[nfds].events = POLLIN;
		owner[nfds++] = NULL;
		if (l->handled_terms == 0 && active_jobs() < max_jobs && l->next_claim < wake)
			wake = l->next_claim;
	}
	else if (l->db.next_attempt < wake)
		wake = l->db.next_attempt;
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
		if (j->runner > 0 && !j->stopped && j->deadline < wake)
			wake = j->deadline;
		if (j->runner == 0 && j->outcome && l->db.conn && j->report_at < wake)
			wake = j->report_at > now ? j->report_at : now;
	}
	if (l->handled_terms > 0 && l->handback_deadline == 0 && l->stop_deadline < wake)
		wake = l->stop_deadline;
	if (l->handback_deadline > 0 && l->handback_deadline < wake)
		wake = l->handback_deadline;
	if (poll(fds, nfds, wake > now ? (int) ((wake - now) * 1000) + 1 : 0) < 0)
	{
		if (errno != EINTR)
		{
			wk_log("poll failed: %s", strerror(errno));
			sleep(1);
		}
		return;
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
		else if (l->db.conn && fds[i].fd == wk_db_socket(&l->db))
			wk_db_poll(&l->db, &l->claim_now);
	}
}

/*
 * The worker's life: connect, report what ended, heartbeats, claims, wait;
 * until a SIGTERM finds no job under way (or the hand-back gives up).
 */
static void
run_loop(Loop *l)
{
	for (;;)
	{
		double		now = wk_now();

		handle_signals(l, now);
		if (l->handback_deadline > 0 && now >= l->handback_deadline)
		{
			wk_log("could not hand back every job (no database): their leases run out by themselves");
			break;
		}
		if (l->db.conn == NULL && now >= l->db.next_attempt && wk_db_connect(&l->db))
			l->claim_now = true;
		for (int i = 0; i < max_jobs && l->db.conn; i++)
			if (jobs[i].used && jobs[i].runner == 0 && jobs[i].outcome && now >= jobs[i].report_at)
			{
				report_job(&l->db, &jobs[i]);
				l->claim_now = true;
			}
		send_heartbeats(l, now);
		claim(l, now);
		if (l->handled_terms > 0 && active_jobs() == 0)
			break;
		wait_for_events(l);
	}
	/* Jobs whose leases run out by themselves: their runners are killed. */
	for (int i = 0; i < max_jobs; i++)
		if (jobs[i].used && jobs[i].runner > 0)
		{
			kill(-jobs[i].runner, SIGKILL);
			waitpid(jobs[i].runner, NULL, 0);
			wk_remove_tree(jobs[i].dir);
		}
	wk_db_drop_quietly(&l->db);
}

/*
 * Runs the worker until it stops: jobs at once, files under base, self the
 * executable the runners run `compile` from.
 */
void
wk_run(const char *dsn, const char *base, const char *self, int jobs_at_once, double grace)
{
	Loop		loop;
	struct sigaction sa;

	max_jobs = jobs_at_once;
	if (pipe(sig_pipe) != 0)
	{
		wk_log("could not create a pipe: %s", strerror(errno));
		return;
	}
	for (int i = 0; i < 2; i++)
	{
		fcntl(sig_pipe[i], F_SETFL, O_NONBLOCK);
		fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	for (int i = 0; i < MAX_JOBS; i++)
		jobs[i].fd = -1;
	memset(&loop, 0, sizeof(loop));
	loop.db.dsn = dsn;
	loop.base = base;
	loop.self = self;
	loop.grace = grace;
	loop.claim_now = true;
	run_loop(&loop);
}
