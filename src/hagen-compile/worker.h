/*
 * worker.h: `hagen-compile worker`, a compile worker for any host.
 *
 * The process that talks to the database (worker.c, worker_db.c) claims
 * jobs of the compile lane and forks one job runner per job
 * (worker_job.c): the runner downloads the inputs through presigned GET
 * URLs (worker_transfer.c), runs `hagen-compile compile` on the manifest
 * as a child of its own, uploads the outputs through presigned PUT URLs
 * and prints its outcome.  The runner tells the worker what happens as
 * JSON lines on a pipe:
 *   {"progress": 0.42}              the helper's fraction
 *   {"outcome": {...}}              the last line: what to hand back
 * Only the worker holds a database connection; a runner holds no secret
 * but the presigned URLs of its one job, which it never logs.
 */
#ifndef HAGEN_COMPILE_WORKER_H
#define HAGEN_COMPILE_WORKER_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

/* Seconds between heartbeats of a running job; most jobs at once. */
#define WK_HEARTBEAT_S 2.0
#define WK_MAX_JOBS 64

/* worker.c: options, the worker's directory, logging */
extern const char *wk_name;

extern void wk_log(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern double wk_now(void);
extern double wk_jitter(double seconds);
extern bool wk_remove_tree(const char *path);

/* worker_loop.c: claims, heartbeats, reports, the runners */
extern void wk_run(const char *dsn, const char *base, const char *self, int jobs_at_once,
				   double grace);

/* worker_db.c: the database side, one connection, the five protocol calls */
typedef enum WkResult
{
	WK_OK,						/* the call was answered */
	WK_LOST,					/* no connection (it was dropped; reconnect) */
	WK_FAILED					/* the call raised an error (logged) */
} WkResult;

typedef struct WkDb
{
	const char *dsn;
	struct pg_conn *conn;
	double		next_attempt;	/* when to try connecting again */
	double		backoff;		/* seconds, doubled at each failure */
	char	   *last_error;		/* of the last failed call, for hints */
	char	   *last_sqlstate;
} WkDb;

extern bool wk_db_check_dsn(const char *dsn);
extern bool wk_db_connect(WkDb *db);
extern void wk_db_drop(WkDb *db, const char *why);
extern void wk_db_retry_later(WkDb *db, const char *why);
extern void wk_db_drop_quietly(WkDb *db);
extern int	wk_db_socket(WkDb *db);
extern bool wk_db_poll(WkDb *db, bool *notified);
extern WkResult wk_db_claim(WkDb *db, int max_jobs, json_t **claims);
extern WkResult wk_db_heartbeat(WkDb *db, int64_t job, int64_t token, double fraction, bool *keep);
extern WkResult wk_db_complete(WkDb *db, int64_t job, int64_t token, json_t *outcome, char **answer);
extern WkResult wk_db_release(WkDb *db, int64_t job, int64_t token, bool *released);
extern WkResult wk_db_next_due(WkDb *db, long *ms);

/* worker_job.c: one job, in a process of its own */
typedef struct WkJobSpec
{
	int64_t		job_id;
	json_t	   *effect;
	const char *dir;			/* its private directory */
	const char *self;			/* this executable, for `compile` */
	int			out_fd;			/* the pipe to the worker */
} WkJobSpec;

extern void wk_run_job(const WkJobSpec *spec) __attribute__((noreturn));

/* worker_transfer.c: presigned transfers with libcurl */
typedef struct WkFile
{
	const char *url;			/* presigned; never logged */
	const char *path;			/* the local file */
	const char *key;			/* the storage key, what logs name */
	const char *content_type;	/* uploads */
} WkFile;

typedef struct WkTransferError
{
	const char *what;			/* "download" or "upload" */
	const char *key;
	long		status;			/* HTTP status, 0 when none came */
	char		body[4096];		/* the start of an error answer */
	char		message[512];
} WkTransferError;

extern void wk_transfer_init(void);
extern bool wk_download_all(WkFile *files, int n, double deadline, long long *bytes,
							WkTransferError *err);
extern bool wk_upload(WkFile *file, double deadline, long long *bytes, WkTransferError *err);

#endif							/* HAGEN_COMPILE_WORKER_H */
