/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  Every configuration setting of hagenkit, defined in one place.
 *
 * Keys and secrets are superuser-only, never shown (SHOW, current_setting
 * and pg_settings display a mask for everyone), and fall back to the
 * environment variables of the app hagenkit replaces.  Service endpoints
 * are reloadable (SIGHUP) but not settable per session: the network guard
 * trusts their origins.
 *
 * IDENTIFICATION
 *	  src/guc.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <limits.h>
#include <stdlib.h>

#include "miscadmin.h"
#include "netguard.h"
#include "utils/guc.h"
#include "utils/memutils.h"

char	   *hagen_database = NULL;
char	   *hagen_fal_queue_url = NULL;
char	   *hagen_fal_rest_url = NULL;
char	   *hagen_fal_video_model = NULL;
char	   *hagen_xai_url = NULL;
char	   *hagen_xai_video_model = NULL;
char	   *hagen_s3_endpoint = NULL;
char	   *hagen_s3_region = NULL;
char	   *hagen_s3_bucket = NULL;
char	   *hagen_public_url = NULL;
char	   *hagen_work_dir = NULL;
int			hagen_max_inflight = 64;
int			hagen_compile_workers = 1;
int			hagen_dispatchers = 1;
int			hagen_max_download_bytes = 1024 * 1024 * 1024;
int			hagen_stall_timeout_s = 60;
char	   *hagen_trusted_hosts = NULL;
int			hagen_poll_interval_ms = 2000;
int			hagen_compile_timeout_s = 1800;
char	   *hagen_compile_helper = NULL;

static int	hagen_clip_timeout_s = 1200;
static int	hagen_log_retention_min = 14 * 24 * 60;
static int	hagen_work_retention_s = 86400;
static int	hagen_max_attempts = 8;
static bool hagen_resubmit_unconfirmed = false;
/* Budgets, read by SQL (start_video, retry_video, add_clip). */
static int	hagen_max_clips_per_project = 20;
static int	hagen_max_project_cents = 0;
static int	hagen_worker_lease_s = 60;
static int	hagen_worker_url_margin_s = 900;
static char *hagen_xai_resolution = NULL;
static int	hagen_fal_image_mode = 0;
static int	hagen_s3_multipart_threshold_kb = 64 * 1024;
static int	hagen_s3_part_size_kb = 16 * 1024;
static int	hagen_s3_upload_concurrency = 8;
static int	hagen_compile_chunk_length_s = 10;
static int	hagen_compile_threads = 0;

static const struct config_enum_entry fal_image_modes[] = {
	{"upload", 0, false},
	{"url", 1, false},
	{NULL, 0, false}
};

#define SECRET_MASK "********"

/* The first non-empty environment variable of two. */
static const char *
env_either(const char *a, const char *b)
{
	const char *v = getenv(a);

	if ((v == NULL || v[0] == '\0') && b != NULL)
		v = getenv(b);
	return v ? v : "";
}

/* hagen_effective_work_dir: hagen.work_dir, or hagen_work in the data directory. */
const char *
hagen_effective_work_dir(void)
{
	static char *dflt = NULL;

	if (hagen_work_dir && hagen_work_dir[0])
		return hagen_work_dir;
	if (dflt == NULL)
		dflt = MemoryContextStrdup(TopMemoryContext,
								   psprintf("%s/hagen_work", DataDir));
	return dflt;
}

/* check hook for endpoint settings: empty, or an http(s) URL. */
static bool
check_http_url(char **newval, void **extra pg_attribute_unused(), GucSource source pg_attribute_unused())
{
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	if (pg_strncasecmp(*newval, "http://", 7) != 0 &&
		pg_strncasecmp(*newval, "https://", 8) != 0)
	{
		GUC_check_errdetail("\"%s\" is not an http:// or https:// URL.", *newval);
		return false;
	}
	return true;
}

/* check hook for hagen.trusted_hosts: host, host:port or [IPv6]:port entries. */
static bool
check_trusted_hosts(char **newval, void **extra pg_attribute_unused(), GucSource source pg_attribute_unused())
{
	char	   *bad = hagen_netguard_bad_host_entry(*newval);

	if (bad == NULL)
		return true;
	GUC_check_errdetail("\"%s\" is not a host, host:port or [IPv6]:port.", bad);
	GUC_check_errhint("List entries separated by commas, such as \"assets.internal, 10.0.0.5:8443\".");
	return false;
}

/* check hook for the compile helper: an absolute path, or empty for the default. */
static bool
check_helper_path(char **newval, void **extra pg_attribute_unused(), GucSource source pg_attribute_unused())
{
	if (*newval == NULL || (*newval)[0] == '\0' || is_absolute_path(*newval))
		return true;
	GUC_check_errdetail("The compile helper must be given by an absolute path.");
	return false;
}

/* A string setting that is reloadable and visible. */
static void
define_string(const char *name, const char *desc, char **var, const char *boot,
			  GucContext context, GucStringCheckHook check)
{
	DefineCustomStringVariable(name, desc, NULL, var, boot, context, 0,
							   check, NULL, NULL);
}

/*
 * check hook of a secret: the value moves into the setting's "extra" and
 * the setting itself always holds an empty string.  So the secret is never
 * what GUC compares, shows or logs: PostgreSQL logs "parameter ... changed
 * to ..." with the raw value from the file on reload whenever the stored
 * value changes, and the stored value here never does.
 */
static bool
check_secret(char **newval, void **extra, GucSource source pg_attribute_unused())
{
	char	   *secret;
	char	   *empty;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	secret = strdup(*newval);
	empty = strdup("");
	if (secret == NULL || empty == NULL)
	{
		free(secret);
		free(empty);
		GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
		return false;
	}
	explicit_bzero(*newval, strlen(*newval));
	free(*newval);
	*newval = empty;
	*extra = secret;
	return true;
}

/*
 * The secret settings, declared once: name, what it is, the environment
 * variables of the app hagenkit replaces that it falls back to (in
 * order), and its hooks.  value is the secret as set in the configuration
 * (NULL when unset; see check_secret); placeholder is the setting's own
 * variable, which always holds an empty string.
 *
 * PostgreSQL does not tell an assign or show hook which setting it
 * serves, so SECRET_HOOKS gives each secret a pair of one-line hooks that
 * pass its number on: the value comes from the extra its check hook made;
 * it shows as a mask when set (from the configuration or the environment)
 * and as an empty string when not.
 */
typedef struct SecretSetting
{
	const char *name;
	const char *what;
	const char *env[2];
	GucStringAssignHook assign;
	GucShowHook show;
	char	   *value;
	char	   *placeholder;
} SecretSetting;

static SecretSetting secrets[HAGEN_SECRET_COUNT];

#define SECRET_HOOKS(which) \
static void \
assign_##which(const char *newval pg_attribute_unused(), void *extra) \
{ \
	secrets[which].value = (char *) extra; \
} \
static const char * \
show_##which(void) \
{ \
	return hagen_secret(which)[0] ? SECRET_MASK : ""; \
}
#define HOOKS_OF(which) assign_##which, show_##which

SECRET_HOOKS(HAGEN_SECRET_FAL_KEY)
SECRET_HOOKS(HAGEN_SECRET_XAI_KEY)
SECRET_HOOKS(HAGEN_SECRET_S3_ACCESS_KEY_ID)
SECRET_HOOKS(HAGEN_SECRET_S3_SECRET_ACCESS_KEY)

static SecretSetting secrets[HAGEN_SECRET_COUNT] = {
	[HAGEN_SECRET_FAL_KEY] = {"hagen.fal_key", "Fal.ai API key", {"FAL_KEY", "FAL_API_KEY"},
	HOOKS_OF(HAGEN_SECRET_FAL_KEY)},
	[HAGEN_SECRET_XAI_KEY] = {"hagen.xai_key", "xAI API key", {"XAI_API_KEY"},
	HOOKS_OF(HAGEN_SECRET_XAI_KEY)},
	[HAGEN_SECRET_S3_ACCESS_KEY_ID] = {"hagen.s3_access_key_id", "S3 access key id", {"R2_ACCESS_KEY_ID"},
	HOOKS_OF(HAGEN_SECRET_S3_ACCESS_KEY_ID)},
	[HAGEN_SECRET_S3_SECRET_ACCESS_KEY] = {"hagen.s3_secret_access_key", "S3 secret access key",
	{"R2_SECRET_ACCESS_KEY"}, HOOKS_OF(HAGEN_SECRET_S3_SECRET_ACCESS_KEY)},
};

/*
 * hagen_secret returns the effective value of a secret: the setting when it
 * is set, else the environment variable the app used.  Never NULL.
 */
const char *
hagen_secret(HagenSecret which)
{
	const SecretSetting *s = &secrets[which];

	if (s->value && s->value[0])
		return s->value;
	return env_either(s->env[0], s->env[1]);
}

/*
 * Defines every secret of the table: superuser-only, reloadable, kept out
 * of the setting itself, shown masked, out of SHOW ALL and the sample file.
 */
static void
define_secrets(void)
{
	int			i;

	for (i = 0; i < HAGEN_SECRET_COUNT; i++)
	{
		SecretSetting *s = &secrets[i];
		char	   *desc = s->env[1]
			? psprintf("%s (falls back to %s or %s).", s->what, s->env[0], s->env[1])
			: psprintf("%s (falls back to %s).", s->what, s->env[0]);

		DefineCustomStringVariable(s->name, MemoryContextStrdup(TopMemoryContext, desc), NULL,
								   &s->placeholder, "", PGC_SIGHUP,
								   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
								   check_secret, s->assign, s->show);
		pfree(desc);
	}
}

/*
 * hagen_define_gucs defines every setting.  Called from _PG_init.
 */
void
hagen_define_gucs(void)
{
	const char *account = getenv("R2_ACCOUNT_ID");
	const char *s3_boot = "";
	static char helper_boot[MAXPGPATH];	/* boot values must outlive us */

	if (account && account[0])
		s3_boot = MemoryContextStrdup(TopMemoryContext,
									  psprintf("https://%s.r2.cloudflarestorage.com", account));
	/* The helper is installed next to the server's executables. */
	strlcpy(helper_boot, my_exec_path, sizeof(helper_boot));
	get_parent_directory(helper_boot);
	strlcat(helper_boot, "/hagen-compile", sizeof(helper_boot));

	DefineCustomStringVariable("hagen.database",
							   "Database in which the hagenkit workers run.",
							   NULL, &hagen_database, "postgres", PGC_POSTMASTER,
							   0, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.dispatchers",
							"Number of dispatchers (workers of the http lane).",
							"They share the lane's jobs and hagen.max_inflight.",
							&hagen_dispatchers, 1, 1,
							HAGEN_MAX_DISPATCHERS, PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.compile_workers",
							"Number of compile workers.",
							NULL, &hagen_compile_workers, 1, 0,
							HAGEN_MAX_COMPILE_WORKERS, PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("hagen.compile_helper",
							   "Path of the hagen-compile executable.",
							   NULL, &hagen_compile_helper, helper_boot,
							   PGC_POSTMASTER, GUC_SUPERUSER_ONLY,
							   check_helper_path, NULL, NULL);

	define_secrets();
	define_string("hagen.fal_queue_url", "Base URL of the Fal.ai queue API.",
				  &hagen_fal_queue_url, "https://queue.fal.run", PGC_SIGHUP, check_http_url);
	define_string("hagen.fal_rest_url", "Base URL of the Fal.ai REST API (storage).",
				  &hagen_fal_rest_url, "https://rest.fal.ai", PGC_SIGHUP, check_http_url);
	define_string("hagen.fal_video_model", "Fal.ai image-to-video model id.",
				  &hagen_fal_video_model, "fal-ai/kling-video/v2.6/pro/image-to-video",
				  PGC_SIGHUP, NULL);

	DefineCustomEnumVariable("hagen.fal_image_mode",
							 "How source images reach Fal.ai: upload (through Fal storage) or url (passed through).",
							 NULL, &hagen_fal_image_mode, 0, fal_image_modes,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	define_string("hagen.xai_url", "Base URL of the xAI API.",
				  &hagen_xai_url, "https://api.x.ai/v1", PGC_SIGHUP, check_http_url);
	define_string("hagen.xai_video_model", "xAI video model id.",
				  &hagen_xai_video_model, "grok-imagine-video", PGC_SIGHUP, NULL);
	define_string("hagen.xai_resolution", "Resolution asked of xAI (480p or 720p).",
				  &hagen_xai_resolution, "720p", PGC_SIGHUP, NULL);

	define_string("hagen.s3_endpoint",
				  "S3 endpoint (falls back to https://$R2_ACCOUNT_ID.r2.cloudflarestorage.com).",
				  &hagen_s3_endpoint, s3_boot, PGC_SIGHUP, check_http_url);
	define_string("hagen.s3_region", "S3 region (auto for R2).",
				  &hagen_s3_region, "auto", PGC_SIGHUP, NULL);
	define_string("hagen.s3_bucket", "S3 bucket (falls back to R2_BUCKET_NAME).",
				  &hagen_s3_bucket, env_either("R2_BUCKET_NAME", NULL), PGC_SIGHUP, NULL);
	define_string("hagen.public_url", "Public base URL of the bucket (falls back to R2_PUBLIC_URL).",
				  &hagen_public_url, env_either("R2_PUBLIC_URL", NULL), PGC_SIGHUP,
				  check_http_url);

	/* Sizes in kB: S3 allows parts of 5 MiB to 5 GiB - 5 MiB (R2's limit). */
	DefineCustomIntVariable("hagen.s3_multipart_threshold",
							"Files of this size or larger are stored with a multipart upload.",
							NULL, &hagen_s3_multipart_threshold_kb, 64 * 1024, 5 * 1024,
							5 * 1024 * 1024 - 5 * 1024, PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.s3_part_size",
							"Size of the parts of a multipart upload (larger when a file needs more than 10,000).",
							NULL, &hagen_s3_part_size_kb, 16 * 1024, 5 * 1024,
							5 * 1024 * 1024 - 5 * 1024, PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.s3_upload_concurrency",
							"Parts of one multipart upload sent at the same time.",
							NULL, &hagen_s3_upload_concurrency, 8, 1, 64, PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	define_string("hagen.work_dir",
				  "Directory for downloaded and compiled media (default: hagen_work in the data directory).",
				  &hagen_work_dir, "", PGC_SIGHUP, NULL);
	DefineCustomIntVariable("hagen.max_inflight",
							"Maximum number of HTTP requests in flight, all dispatchers together.",
							NULL, &hagen_max_inflight, 64, 1, 1024, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.max_download_bytes",
							"Largest file hagenkit downloads.",
							NULL, &hagen_max_download_bytes, 1024 * 1024 * 1024,
							1024, INT_MAX, PGC_SIGHUP, GUC_UNIT_BYTE,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.stall_timeout",
							"A request that receives or sends nothing for this long is abandoned (and retried).",
							"Catches connections that hang without closing, well before a request's own time limit.",
							&hagen_stall_timeout_s, 60, 1, 3600, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	define_string("hagen.trusted_hosts",
				  "Comma-separated host or host:port entries that user and provider URLs may reach even on private or loopback addresses.",
				  &hagen_trusted_hosts, "", PGC_SIGHUP, check_trusted_hosts);
	DefineCustomIntVariable("hagen.poll_interval",
							"How often a provider request is polled.",
							NULL, &hagen_poll_interval_ms, 2000, 10, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.clip_timeout",
							"Time limit of a clip or transition job.",
							NULL, &hagen_clip_timeout_s, 1200, 10, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.compile_timeout",
							"Time limit of one run of the compile helper.",
							NULL, &hagen_compile_timeout_s, 1800, 10, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.compile_chunk_length",
							"A re-encode is split into chunks of at least this much video, which several compile workers encode at once (0: never split).",
							NULL, &hagen_compile_chunk_length_s, 10, 0, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.compile_threads",
							"Threads of one run of the compile helper: its video encoder, decoders and filters (0: one per core).",
							NULL, &hagen_compile_threads, 0, 0, 64,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.log_retention",
							"How long job history is kept.",
							NULL, &hagen_log_retention_min, 14 * 24 * 60, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MIN, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.work_retention",
							"How long the work files no project or job uses may stay before the hourly sweep removes them.",
							NULL, &hagen_work_retention_s, 86400, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.max_attempts",
							"How many times one step of a job is tried before the job fails.",
							NULL, &hagen_max_attempts, 8, 1, 100,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("hagen.resubmit_unconfirmed",
							 "Send a provider request again when the answer to the first was lost (may bill twice).",
							 NULL, &hagen_resubmit_unconfirmed, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.worker_lease",
							"Lease of a compile job claimed by a remote worker, renewed by its heartbeats.",
							"A remote worker that stops sending heartbeats loses its job this long after its last one.",
							&hagen_worker_lease_s, 60, 2, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.worker_url_margin",
							"How long the presigned URLs given to a remote worker live beyond hagen.compile_timeout.",
							"The time a remote worker has for its downloads and uploads; a retry gets new URLs.",
							&hagen_worker_url_margin_s, 900, 0, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	/*
	 * Budgets: superuser-only, so a tenant cannot lift its own limit, but
	 * settable per role or database (ALTER ROLE ... SET) for a superuser.
	 */
	DefineCustomIntVariable("hagen.max_clips_per_project",
							"Most clips a project may have (0: no limit).",
							NULL, &hagen_max_clips_per_project, 20, 0, 100000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("hagen.max_project_cents",
							"Most a project's video may cost, in cents (0: no limit).",
							NULL, &hagen_max_project_cents, 0, 0, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);

	MarkGUCPrefixReserved("hagen");
}
