/*
 * worker_transfer.c: the downloads and uploads of a remote compile job,
 * through the presigned URLs of its effect, with libcurl.
 *
 * Inputs come down several at a time (one multi handle), each into
 * FILE.part and renamed when whole; outputs go up one after the other,
 * each with one PUT streamed from its file (see the README for why one
 * PUT and not a multipart upload).  A transfer that fails in a way worth
 * retrying (no answer, 429, 5xx) is tried up to three times, 1 s and 2 s
 * apart (with jitter); any other answer (a 403 for an expired URL above
 * all) ends the job at once, with the start of the answer's body for SQL
 * to read.  A transfer with no byte moving for 60 s is abandoned.  Only
 * http and https are spoken, no redirect is followed, and a URL is never
 * written anywhere: messages name the storage key.
 */
#include "worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#define TRIES 3
#define CONCURRENCY 6

typedef struct Xfer
{
	WkFile	   *file;
	CURL	   *h;
	FILE	   *fp;
	char	   *part;			/* downloads: FILE.part */
	bool		done;
	long		status;
	CURLcode	code;
	char		errbuf[CURL_ERROR_SIZE];
	char		body[4096];		/* uploads: the start of the answer */
	size_t		body_len;
} Xfer;

void
wk_transfer_init(void)
{
	curl_global_init(CURL_GLOBAL_ALL);
}

/* Options every transfer shares. */
static void
common_options(Xfer *x, double deadline)
{
	double		left = deadline - wk_now();

	curl_easy_setopt(x->h, CURLOPT_URL, x->file->url);
	curl_easy_setopt(x->h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(x->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(x->h, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(x->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(x->h, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(x->h, CURLOPT_TIMEOUT_MS, (long) (left > 1 ? left * 1000 : 1000));
	curl_easy_setopt(x->h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(x->h, CURLOPT_USERAGENT, "hagen-compile worker");
	x->errbuf[0] = '\0';
}

/* Creates the directories above a relative path. */
static bool
make_parents(const char *path)
{
	char	   *p = strdup(path);

	for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/'))
	{
		*s = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
		{
			free(p);
			return false;
		}
		*s = '/';
	}
	free(p);
	return true;
}

/* Whether a failed transfer is worth trying again. */
static bool
transient(const Xfer *x)
{
	return x->code != CURLE_OK || x->status == 429 || x->status >= 500 || x->status == 0;
}

/* Fills err from a failed transfer. */
static void
set_error(WkTransferError *err, const char *what, const Xfer *x)
{
	err->what = what;
	err->key = x->file->key;
	err->status = x->code == CURLE_OK ? x->status : 0;
	err->body[0] = '\0';
	if (x->code != CURLE_OK)
		snprintf(err->message, sizeof(err->message), "%s of %s failed: %s", what, x->file->key,
				 x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->code));
	else
		snprintf(err->message, sizeof(err->message), "%s of %s failed: HTTP %ld", what, x->file->key,
				 x->status);
}

/* Starts a download: FILE.part, truncated. */
static bool
start_download(CURLM *m, Xfer *x, double deadline, WkTransferError *err)
{
	if (!make_parents(x->file->path) || (x->fp = fopen(x->part, "wb")) == NULL)
	{
		err->what = "download";
		err->key = x->file->key;
		err->status = 0;
		snprintf(err->message, sizeof(err->message), "could not write %s: %s", x->part, strerror(errno));
		return false;
	}
	x->h = curl_easy_init();
	common_options(x, deadline);
	curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x->fp);
	curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
	curl_multi_add_handle(m, x->h);
	return true;
}

/* A download ended: the file renamed into place, or the error recorded. */
static bool
end_download(CURLM *m, Xfer *x, CURLcode code, long long *bytes, WkTransferError *err, bool *retry)
{
	bool		ok;

	x->code = code;
	x->status = 0;
	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
	curl_multi_remove_handle(m, x->h);
	curl_easy_cleanup(x->h);
	x->h = NULL;
	ok = fclose(x->fp) == 0;
	x->fp = NULL;
	if (code == CURLE_OK && x->status >= 200 && x->status < 300 && ok)
	{
		struct stat st;

		if (rename(x->part, x->file->path) != 0 || stat(x->file->path, &st) != 0)
		{
			err->what = "download";
			err->key = x->file->key;
			err->status = 0;
			snprintf(err->message, sizeof(err->message), "could not keep %s: %s", x->file->path, strerror(errno));
			*retry = false;
			return false;
		}
		*bytes += st.st_size;
		x->done = true;
		return true;
	}
	set_error(err, "download", x);
	if (code == CURLE_OK)
	{
		/* The answer's body is in the .part file: keep its start. */
		FILE	   *f = fopen(x->part, "rb");

		if (f)
		{
			size_t		n = fread(err->body, 1, sizeof(err->body) - 1, f);

			err->body[n] = '\0';
			fclose(f);
		}
	}
	unlink(x->part);
	*retry = transient(x);
	return false;
}

/*
 * Downloads every file (url -> path), CONCURRENCY at a time; false with
 * err filled at the first failure that is not worth retrying, or when
 * retries ran out.  Adds the bytes received to *bytes.
 */
bool
wk_download_all(WkFile *files, int n, double deadline, long long *bytes, WkTransferError *err)
{
	Xfer	   *xs = calloc(n > 0 ? n : 1, sizeof(Xfer));
	CURLM	   *m = curl_multi_init();
	bool		ok = true;

	for (int i = 0; i < n; i++)
	{
		xs[i].file = &files[i];
		xs[i].part = malloc(strlen(files[i].path) + 6);
		sprintf(xs[i].part, "%s.part", files[i].path);
	}
	for (int attempt = 1; attempt <= TRIES && ok; attempt++)
	{
		int			next = 0;
		int			running = 0;
		int			failed = 0;

		if (attempt > 1)
		{
			double		wait = wk_jitter(attempt == 2 ? 1 : 2);

			wk_log("%s; trying the failed downloads again in %.1f s", err->message, wait);
			usleep((useconds_t) (wait * 1e6));
		}
		for (;;)
		{
			CURLMsg    *msg;
			int			left;

			while (running < CONCURRENCY && next < n)
			{
				if (!xs[next].done)
				{
					if (!start_download(m, &xs[next], deadline, err))
					{
						ok = false;
						break;
					}
					running++;
				}
				next++;
			}
			if (!ok || running == 0)
				break;
			curl_multi_perform(m, &left);
			while ((msg = curl_multi_info_read(m, &left)) != NULL)
			{
				Xfer	   *x;
				bool		retry = false;

				if (msg->msg != CURLMSG_DONE)
					continue;
				curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &x);
				running--;
				if (!end_download(m, x, msg->data.result, bytes, err, &retry))
				{
					failed++;
					if (!retry)
						ok = false;
				}
			}
			if (!ok)
				break;
			if (running > 0)
				curl_multi_poll(m, NULL, 0, 1000, NULL);
		}
		if (ok && failed == 0)
			break;
		if (ok && attempt == TRIES)
			ok = false;
	}
	/* Whatever is still under way when giving up. */
	for (int i = 0; i < n; i++)
	{
		if (xs[i].h)
		{
			curl_multi_remove_handle(m, xs[i].h);
			curl_easy_cleanup(xs[i].h);
		}
		if (xs[i].fp)
		{
			fclose(xs[i].fp);
			unlink(xs[i].part);
		}
		free(xs[i].part);
	}
	curl_multi_cleanup(m);
	free(xs);
	return ok;
}

/* Keeps the start of an upload's answer. */
static size_t
keep_body(char *data, size_t size, size_t nmemb, void *arg)
{
	Xfer	   *x = (Xfer *) arg;
	size_t		n = size * nmemb;
	size_t		room = sizeof(x->body) - 1 - x->body_len;

	memcpy(x->body + x->body_len, data, n < room ? n : room);
	x->body_len += n < room ? n : room;
	x->body[x->body_len] = '\0';
	return n;
}

/*
 * Uploads a file with one PUT, retried like the downloads; false with err
 * filled when it could not be stored.  Adds the bytes sent to *bytes.
 */
bool
wk_upload(WkFile *file, double deadline, long long *bytes, WkTransferError *err)
{
	struct stat st;
	char		ctype[160];

	if (stat(file->path, &st) != 0)
	{
		err->what = "upload";
		err->key = file->key;
		err->status = 0;
		snprintf(err->message, sizeof(err->message), "output %s is missing: %s", file->path, strerror(errno));
		return false;
	}
	snprintf(ctype, sizeof(ctype), "Content-Type: %s",
			 file->content_type ? file->content_type : "application/octet-stream");
	for (int attempt = 1; attempt <= TRIES; attempt++)
	{
		Xfer		x;
		struct curl_slist *headers = NULL;

		memset(&x, 0, sizeof(x));
		x.file = file;
		if (attempt > 1)
		{
			double		wait = wk_jitter(attempt == 2 ? 1 : 2);

			wk_log("%s; trying again in %.1f s", err->message, wait);
			usleep((useconds_t) (wait * 1e6));
		}
		if ((x.fp = fopen(file->path, "rb")) == NULL)
		{
			err->what = "upload";
			err->key = file->key;
			err->status = 0;
			snprintf(err->message, sizeof(err->message), "could not read %s: %s", file->path, strerror(errno));
			return false;
		}
		x.h = curl_easy_init();
		common_options(&x, deadline);
		/* R2 does not answer "100 Continue": send the body at once. */
		headers = curl_slist_append(headers, ctype);
		headers = curl_slist_append(headers, "Expect:");
		curl_easy_setopt(x.h, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(x.h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(x.h, CURLOPT_READDATA, x.fp);
		curl_easy_setopt(x.h, CURLOPT_INFILESIZE_LARGE, (curl_off_t) st.st_size);
		curl_easy_setopt(x.h, CURLOPT_WRITEFUNCTION, keep_body);
		curl_easy_setopt(x.h, CURLOPT_WRITEDATA, &x);
		x.code = curl_easy_perform(x.h);
		curl_easy_getinfo(x.h, CURLINFO_RESPONSE_CODE, &x.status);
		curl_easy_cleanup(x.h);
		curl_slist_free_all(headers);
		fclose(x.fp);
		if (x.code == CURLE_OK && x.status >= 200 && x.status < 300)
		{
			*bytes += st.st_size;
			return true;
		}
		set_error(err, "upload", &x);
		memcpy(err->body, x.body, x.body_len + 1);
		if (!transient(&x))
			return false;
	}
	return false;
}
