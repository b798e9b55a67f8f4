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
 * One line per event on stderr; never a URL, a password or a DSN.  This file
 * holds the options, the worker's directory and logging; worker_loop.c the
 * loop, worker_db.c the database side, worker_job.c a job's runner,
 * worker_transfer.c the presigned transfers.
 */
/* nftw */
#define _GNU_SOURCE

#include "worker.h"
#include "hc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *wk_name = "worker";

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
			WK_MAX_JOBS);
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
	static char self[PATH_MAX];
	double		grace = 600;
	ssize_t		n;
	int			c;
	int			max_jobs = 1;
	char	   *base;

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
				if (*end || max_jobs < 1 || max_jobs > WK_MAX_JOBS)
				{
					fprintf(stderr, "hagen-compile worker: --jobs must be 1 to %d, not \"%s\"\n", WK_MAX_JOBS, optarg);
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
	{
		size_t		len = strlen(wk_name);
		bool		ok = len >= 1 && len <= 100;

		for (const char *p = wk_name; ok && *p; p++)
			ok = (unsigned char) *p > ' ' && (unsigned char) *p < 0x7f && *p != '/';
		if (!ok)
		{
			fprintf(stderr, "hagen-compile worker: --name must be 1 to 100 printable ASCII characters without spaces or \"/\", not \"%s\"\n",
					wk_name);
			return 2;
		}
	}
	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) <= 0)
	{
		fprintf(stderr, "hagen-compile worker: could not find its own executable: %s\n", strerror(errno));
		return 1;
	}
	self[n] = '\0';
	srandom((unsigned) (getpid() ^ time(NULL)));
	base = own_directory(work_dir);
	wk_log("started: %d job(s) at once, files in %s", max_jobs, base);
	wk_run(dsn, base, self, max_jobs, grace);
	wk_log("stopped");
	return 0;
}
