/*-------------------------------------------------------------------------
 *
 * hagenkit.h
 *	  Declarations shared by the C parts of hagenkit.
 *
 * Glossary (used throughout):
 *	job		a row of hagen.job: one clip, transition, compile or provider
 *			cancel, advancing through persisted steps.
 *	effect	what one step of a job needs done in the outside world (an
 *			HTTP request, a compile), decided in SQL and handed to C as jsonb.
 *	outcome	what happened when C carried an effect out, handed back to SQL.
 *	lease	a claim on a job by a worker, named by a token; an outcome with
 *			a token that is no longer the job's is ignored by SQL.
 *	lane	which kind of worker carries a job's effects out: "http" (the
 *			dispatchers, hagen.dispatchers of them) or "compile" (the
 *			compile workers).
 *
 * IDENTIFICATION
 *	  src/hagenkit.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HAGENKIT_H
#define HAGENKIT_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "fmgr.h"
#include "utils/jsonb.h"

#define HAGEN_MAX_COMPILE_WORKERS 16
#define HAGEN_MAX_DISPATCHERS 16

/* GUC variables (guc.c) */
extern char *hagen_database;
extern char *hagen_fal_queue_url;
extern char *hagen_fal_rest_url;
extern char *hagen_fal_video_model;
extern char *hagen_xai_url;
extern char *hagen_xai_video_model;
extern char *hagen_s3_endpoint;
extern char *hagen_s3_region;
extern char *hagen_s3_bucket;
extern char *hagen_public_url;
extern char *hagen_work_dir;
extern int	hagen_max_inflight;
extern int	hagen_compile_workers;
extern int	hagen_dispatchers;
extern int	hagen_max_download_bytes;
extern int	hagen_stall_timeout_s;
extern char *hagen_trusted_hosts;
extern int	hagen_poll_interval_ms;
extern int	hagen_compile_timeout_s;
extern char *hagen_compile_helper;

/* Secrets: effective values (GUC, else environment); never logged. */
typedef enum HagenSecret
{
	HAGEN_SECRET_FAL_KEY,
	HAGEN_SECRET_XAI_KEY,
	HAGEN_SECRET_S3_ACCESS_KEY_ID,
	HAGEN_SECRET_S3_SECRET_ACCESS_KEY,
	HAGEN_SECRET_COUNT
} HagenSecret;

extern void hagen_define_gucs(void);
extern const char *hagen_secret(HagenSecret which);
extern const char *hagen_effective_work_dir(void);

/* Shared memory and wake-ups (shmem.c) */
typedef enum HagenWorkerKind
{
	HAGEN_WORKER_DISPATCHER,
	HAGEN_WORKER_COMPILE
} HagenWorkerKind;

/* The lanes of hagen.job: which kind of worker carries a job's effects out. */
typedef enum HagenLane
{
	HAGEN_LANE_HTTP,
	HAGEN_LANE_COMPILE
} HagenLane;
#define HAGEN_LANES 2

extern void hagen_shmem_init(void);
extern void hagen_worker_attach(HagenWorkerKind kind, int slot);
extern void hagen_wake_all(void);
extern void hagen_lane_reading(void);
extern TimestampTz hagen_lane_sleep(TimestampTz wake_at, bool want_work);
extern void hagen_lane_awake(void);
extern int	hagen_inflight_reserve(int have, int want);
extern void hagen_inflight_set(int n);

/* Worker plumbing (worker.c) */
extern void hagen_worker_start(const char *name, HagenWorkerKind kind, int slot);
extern bool hagen_worker_wait(long timeout_ms);
extern bool hagen_extension_ready(void);

/* The SQL side of the effect protocol (jobs.c) */
typedef struct HagenClaim
{
	int64		job_id;
	int64		token;
	Jsonb	   *effect;			/* palloc'd in the caller's context */
} HagenClaim;

extern int	hagen_claim_jobs(const char *lane, int max_jobs, MemoryContext cxt,
							 HagenClaim **claims, long *next_due_ms);
extern bool hagen_complete_job(int64 job_id, int64 token, const char *outcome_json);
extern bool hagen_complete_jobs(const char *outcomes_json);
extern int	hagen_exchange(const char *outcomes_json, const char *lane, int max_jobs,
						   MemoryContext cxt, HagenClaim **claims, long *next_due_ms);
extern void hagen_recover_jobs(const char *lane);
extern void hagen_purge_history(void);
extern bool hagen_heartbeat(int64 job_id, int64 token, const char *progress_json);

/* Reading effects (effect.c) */
extern char *hagen_jsonb_text(Jsonb *jb, const char *key);
extern bool hagen_jsonb_bool(Jsonb *jb, const char *key, bool dflt);
extern int64 hagen_jsonb_int(Jsonb *jb, const char *key, int64 dflt);
extern Jsonb *hagen_jsonb_object(Jsonb *jb, const char *key);
extern char *hagen_jsonb_value_json(Jsonb *jb, const char *key);

/* The work directory (workdir.c) */
extern char *hagen_work_path(const char *relative, bool create_dirs, char **error);
extern char *hagen_work_remove(const char *relative);
extern int64 hagen_work_file_size(const char *path);

/* Writing JSON text with escape_json (json_writer.c) */
#define HAGEN_JSON_MAX_DEPTH 8

typedef struct HagenJson
{
	StringInfo	buf;
	int			depth;			/* objects and arrays open */
	bool		has_members[HAGEN_JSON_MAX_DEPTH];	/* per level: a comma is due */
} HagenJson;

extern void hagen_json_init(HagenJson *w, StringInfo buf);
extern void hagen_json_object_start(HagenJson *w, const char *key);
extern void hagen_json_object_end(HagenJson *w);
extern void hagen_json_array_start(HagenJson *w, const char *key);
extern void hagen_json_array_end(HagenJson *w);
extern void hagen_json_string(HagenJson *w, const char *key, const char *value);
extern void hagen_json_text(HagenJson *w, const char *key, const char *value, size_t len);
extern void hagen_json_int(HagenJson *w, const char *key, int64 value);
extern void hagen_json_bool(HagenJson *w, const char *key, bool value);
extern void hagen_json_raw(HagenJson *w, const char *key, const char *json);

/* Percent-encoding of URLs and SigV4 (s3auth.c) */
extern void hagen_percent_encode(StringInfo buf, const char *s, int len, bool keep_slash);

/* SQL-callable (shmem.c) */
extern Datum hagen_wake(PG_FUNCTION_ARGS);

/* Background worker entry points */
extern PGDLLEXPORT void hagen_dispatcher_main(Datum arg);
extern PGDLLEXPORT void hagen_compile_worker_main(Datum arg);

#endif							/* HAGENKIT_H */
