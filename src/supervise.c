/*-------------------------------------------------------------------------
 *
 * supervise.c
 *	  Runs hagen-compile as a child process of a compile worker, bound to
 *	  that worker, under limits, and relays what it prints.
 *
 * A crash of the helper on a bad media file ends the helper, never the
 * server.  The helper must also never outlive its worker, whatever ends
 * the worker:
 *	- it runs in a process group of its own, which an exit callback of the
 *	  worker kills (a worker ending by SIGTERM, an ERROR turned FATAL, the
 *	  postmaster's death);
 *	- PR_SET_PDEATHSIG makes the kernel kill it should the worker be killed
 *	  outright (SIGKILL, a crash), when no callback can run.
 * Its limits: hagen.compile_timeout of CPU time and of wall-clock time, a
 * 4 GB address space, no core files, an environment of PATH and LANG only,
 * stdin from /dev/null, stderr to a log file.  It runs in the work
 * directory, so the relative paths of its manifest resolve there.
 *
 * IDENTIFICATION
 *	  src/supervise.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "supervise.h"
#include "utils/timestamp.h"

#define HELPER_MEMORY_LIMIT ((rlim_t) 4 * 1024 * 1024 * 1024)
#define MAX_LINE (1024 * 1024)

/* The process group of the helper running now, for the exit callback. */
static pid_t running_group = 0;
static bool callback_registered = false;

static void
kill_running_helper(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	if (running_group > 0)
		kill(-running_group, SIGKILL);
	running_group = 0;
}

/* In the child: bind to the worker, limits, a clean environment, exec. */
static void
exec_helper(HagenHelperRun *run, pid_t worker, int out_fd)
{
	struct rlimit rl;
	char	   *envp[] = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", NULL};
	int			log_fd;
	int			fd;

	setpgid(0, 0);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != worker)
		_exit(126);				/* the worker is gone already */
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGQUIT, SIG_DFL);
	signal(SIGUSR1, SIG_DFL);
	signal(SIGUSR2, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	rl.rlim_cur = rl.rlim_max = (rlim_t) run->timeout_s;
	setrlimit(RLIMIT_CPU, &rl);
	rl.rlim_cur = rl.rlim_max = HELPER_MEMORY_LIMIT;
	setrlimit(RLIMIT_AS, &rl);
	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	if (chdir(hagen_effective_work_dir()) != 0)
		_exit(125);
	log_fd = open(run->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	fd = open("/dev/null", O_RDONLY);
	dup2(fd, 0);
	dup2(out_fd, 1);
	dup2(log_fd >= 0 ? log_fd : out_fd, 2);
	for (fd = 3; fd < 1024; fd++)
		close(fd);
	execve(run->argv[0], run->argv, envp);
	_exit(127);
}

/* Stops the helper (its whole group) once, saying why. */
static void
stop_helper(HagenHelperRun *run, pid_t pid, const char *why)
{
	if (run->stopped == NULL)
	{
		kill(-pid, SIGKILL);
		run->stopped = why;
	}
}

/*
 * hagen_helper_run starts the helper and relays its lines to run->on_line
 * until it exits; fills run->wstatus and run->stopped.  Raises an ERROR
 * only when the child cannot be started.
 */
void
hagen_helper_run(HagenHelperRun *run)
{
	int			pipefd[2];
	pid_t		pid;
	pid_t		worker = getpid();
	StringInfoData line;
	TimestampTz deadline;
	TimestampTz last_tick;
	char		buf[8192];

	run->wstatus = 0;
	run->stopped = NULL;
	if (!callback_registered)
	{
		before_shmem_exit(kill_running_helper, (Datum) 0);
		callback_registered = true;
	}
	if (pipe(pipefd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create a pipe for hagen-compile: %m")));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
	{
		close(pipefd[0]);
		close(pipefd[1]);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start hagen-compile: %m")));
	}
	if (pid == 0)
		exec_helper(run, worker, pipefd[1]);
	/* Both sides set the group, so that it exists before anyone kills it. */
	setpgid(pid, pid);
	running_group = pid;
	close(pipefd[1]);
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) run->timeout_s * 1000);
	last_tick = GetCurrentTimestamp();
	initStringInfo(&line);

	for (;;)
	{
		ssize_t		n = read(pipefd[0], buf, sizeof(buf));
		TimestampTz now = GetCurrentTimestamp();
		const char *why;

		if (n > 0)
		{
			for (ssize_t i = 0; i < n; i++)
			{
				if (buf[i] != '\n')
				{
					if (line.len < MAX_LINE)
						appendStringInfoChar(&line, buf[i]);
					continue;
				}
				if ((why = run->on_line(line.data, run->arg)) != NULL)
					stop_helper(run, pid, why);
				resetStringInfo(&line);
			}
		}
		else if (n == 0)
			break;				/* EOF: the helper has exited */
		else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			break;
		if (now >= deadline)
			stop_helper(run, pid, psprintf("hagen-compile took longer than hagen.compile_timeout (%d s)",
										   run->timeout_s));
		if (TimestampDifferenceExceeds(last_tick, now, run->tick_ms))
		{
			last_tick = now;
			if ((why = run->on_line(NULL, run->arg)) != NULL)
				stop_helper(run, pid, why);
		}
		if (n > 0)
			continue;
		(void) WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT |
								 WL_EXIT_ON_PM_DEATH, pipefd[0], 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* SIGTERM: the exit callback kills the helper on the way out. */
		CHECK_FOR_INTERRUPTS();
	}
	close(pipefd[0]);
	while (waitpid(pid, &run->wstatus, 0) < 0 && errno == EINTR)
		;
	/* Anything the helper left in its group goes with it. */
	kill(-pid, SIGKILL);
	running_group = 0;
}
