/*-------------------------------------------------------------------------
 *
 * http_transfer.c
 *	  One transfer of the HTTP executor: an "http" effect set up on a
 *	  libcurl easy handle, its callbacks, and its outcome.
 *
 * JSON bodies are kept in memory up to a cap; media is streamed to and
 * from files in the work directory, so memory does not grow with file
 * size.  Authentication is added here at send time from configuration, by
 * the auth kind the effect names: no key ever passes through SQL.  The
 * network guard checks every address a guarded transfer is about to
 * connect to (libcurl's open-socket callback); redirects of guarded
 * downloads are followed one hop at a time, each checked again.
 *
 * libcurl calls back into this file; the callbacks never raise an error
 * (they cannot longjmp through libcurl), they record what went wrong on
 * the transfer and make libcurl stop it.
 *
 * The event loop that drives the transfers is http_loop.c;
 * http_transfer.h is what it sees of them.
 *
 * IDENTIFICATION
 *	  src/http_transfer.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "http_transfer.h"
#include "mb/pg_wchar.h"
#include "netguard.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define BODY_CAP (16 * 1024 * 1024)		/* JSON answers kept in memory */
#define ERROR_BODY_CAP (64 * 1024)	/* error bodies of file downloads */
#define MAX_HEADERS 100		/* answer headers kept in an outcome */
#define MAX_REDIRECTS 5
#define UPLOAD_BUFFER (256 * 1024)	/* per upload: 16 MB at most with 64 in flight */

struct HagenTransfer
{
	MemoryContext cxt;			/* everything palloc'd for this transfer */
	int64		job_id;
	int64		token;
	CURL	   *easy;
	struct curl_slist *req_headers;
	char	   *url;
	char	   *body;
	bool		guard;
	bool		trusted;
	bool		follow;
	int			redirects;
	char	   *save_rel;		/* as SQL gave it */
	char	   *save_path;
	char	   *part_path;
	FILE	   *out;
	/* a body streamed from a work file: bytes [in_start, in_end) */
	char	   *in_path;
	int			in_fd;
	int64		in_start;
	int64		in_end;
	int64		in_pos;
	int			in_errno;
	bool		in_short;
	int64		max_bytes;
	int64		received;
	bool		too_large;
	int			io_errno;
	bool		guard_refused;
	char		guard_error[256];
	/* response, malloc'd (written from libcurl callbacks) */
	char	   *resp;
	size_t		resp_len;
	size_t		resp_cap;
	TimestampTz started;
	char	   *outcome;		/* set once done */
};


static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose pg_attribute_unused(),
			  struct curl_sockaddr *addr)
{
	HagenTransfer *t = (HagenTransfer *) clientp;

	if (t->guard && !t->trusted)
	{
		const char *why = hagen_netguard_refuses(&addr->addr);

		if (why)
		{
			char		ip[INET6_ADDRSTRLEN] = "?";

			if (addr->family == AF_INET)
				inet_ntop(AF_INET, &((struct sockaddr_in *) &addr->addr)->sin_addr, ip, sizeof(ip));
			else if (addr->family == AF_INET6)
				inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &addr->addr)->sin6_addr, ip, sizeof(ip));
			snprintf(t->guard_error, sizeof(t->guard_error),
					 "it resolves to %s, a %s", ip, why);
			t->guard_refused = true;
			return CURL_SOCKET_BAD;
		}
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HagenTransfer *t = (HagenTransfer *) userdata;
	size_t		n = size * nmemb;
	long		code = 0;
	size_t		cap;

	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
	if (t->follow && code >= 300 && code < 400)
		return n;				/* a redirect's body: not ours */
	if (t->save_path && code >= 200 && code < 300)
	{
		if (t->received + (int64) n > t->max_bytes)
		{
			t->too_large = true;
			return 0;
		}
		if (t->out == NULL && (t->out = fopen(t->part_path, "wb")) == NULL)
		{
			t->io_errno = errno;
			return 0;
		}
		if (fwrite(ptr, 1, n, t->out) != n)
		{
			t->io_errno = errno;
			return 0;
		}
		t->received += n;
		return n;
	}
	cap = t->save_path ? ERROR_BODY_CAP : BODY_CAP;
	if (t->resp_len + n > cap)
	{
		if (t->save_path)
			return n;			/* keep the start of an error body only */
		t->too_large = true;
		return 0;
	}
	if (t->resp_len + n + 1 > t->resp_cap)
	{
		size_t		newcap = Max(t->resp_cap * 2, t->resp_len + n + 1);
		char	   *p = realloc(t->resp, Max(newcap, 4096));

		if (p == NULL)
			return 0;
		t->resp = p;
		t->resp_cap = Max(newcap, 4096);
	}
	memcpy(t->resp + t->resp_len, ptr, n);
	t->resp_len += n;
	t->resp[t->resp_len] = '\0';
	return n;
}

/*
 * Streams the body of an upload from its work file, never more than the
 * range the effect names; pread keeps each transfer's position its own.
 */
static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	HagenTransfer *t = (HagenTransfer *) userdata;
	size_t		want = size * nitems;
	ssize_t		got;

	if (t->in_pos >= t->in_end)
		return 0;
	if ((int64) want > t->in_end - t->in_pos)
		want = (size_t) (t->in_end - t->in_pos);
	got = pread(t->in_fd, buffer, want, (off_t) t->in_pos);
	if (got < 0)
	{
		t->in_errno = errno;
		return CURL_READFUNC_ABORT;
	}
	if (got == 0)
	{
		t->in_short = true;		/* the file shrank under us */
		return CURL_READFUNC_ABORT;
	}
	t->in_pos += got;
	return (size_t) got;
}

/* Rewinds an upload (libcurl asks when it must send the body again). */
static int
seek_cb(void *userdata, curl_off_t offset, int origin)
{
	HagenTransfer *t = (HagenTransfer *) userdata;

	if (origin != SEEK_SET)
		return CURL_SEEKFUNC_CANTSEEK;
	if (offset < 0 || offset > t->in_end - t->in_start)
		return CURL_SEEKFUNC_FAIL;
	t->in_pos = t->in_start + offset;
	return CURL_SEEKFUNC_OK;
}

/* ---- outcomes ---- */

/*
 * Writes the headers of the last answer of a transfer (after redirects),
 * as libcurl parsed them (curl_easy_nextheader: values trimmed), names
 * lower-cased; a name that is not an HTTP token is left out.  A name
 * given twice appears twice, and SQL keeps the last.
 */
static void
add_headers_json(HagenJson *w, CURL *easy)
{
	struct curl_header *h = NULL;
	int			n = 0;

	while (n < MAX_HEADERS && (h = curl_easy_nextheader(easy, CURLH_HEADER, -1, h)) != NULL)
	{
		char	   *name = pstrdup(h->name);
		char	   *p;

		for (p = name; *p; p++)
		{
			if (!isalnum((unsigned char) *p) && strchr("!#$%&'*+-.^_`|~", *p) == NULL)
				break;
			*p = pg_ascii_tolower((unsigned char) *p);
		}
		if (*p == '\0' && p > name)
		{
			hagen_json_text(w, name, h->value, strlen(h->value));
			n++;
		}
		pfree(name);
	}
}

/* Builds the outcome of a finished transfer as JSON text. */
static char *
build_outcome(HagenTransfer *t, CURLcode res)
{
	StringInfoData buf;
	HagenJson	w;
	long		code = 0;
	long		reqsize = 0;
	const char *kind = NULL;
	char	   *error = NULL;
	bool		connect_phase = false;

	if (t->easy)
	{
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
		curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &reqsize);
	}
	if (t->guard_refused)
	{
		kind = "guard";
		error = psprintf("%s: %s", t->url, t->guard_error);
		connect_phase = true;
		code = 0;
	}
	else if (t->too_large)
	{
		kind = "too_large";
		error = psprintf("the answer from %s is larger than %lld bytes", t->url,
						 (long long) (t->save_path ? t->max_bytes : BODY_CAP));
		code = 0;
	}
	else if (t->io_errno)
	{
		errno = t->io_errno;
		kind = "io";
		error = psprintf("could not write \"%s\": %m", t->part_path);
		code = 0;
	}
	else if (t->in_errno || t->in_short)
	{
		errno = t->in_errno;
		kind = "io";
		error = t->in_short
			? psprintf("\"%s\" ended before byte %lld of the body", t->in_path,
					   (long long) t->in_end)
			: psprintf("could not read \"%s\": %m", t->in_path);
		code = 0;
	}
	else if (res != CURLE_OK)
	{
		kind = "transport";
		error = psprintf("%s: %s", t->url, curl_easy_strerror(res));
		connect_phase = (res == CURLE_COULDNT_RESOLVE_HOST || res == CURLE_COULDNT_CONNECT ||
						 res == CURLE_COULDNT_RESOLVE_PROXY || reqsize == 0);
		code = 0;
	}

	initStringInfo(&buf);
	hagen_json_init(&w, &buf);
	hagen_json_object_start(&w, NULL);
	hagen_json_int(&w, "status", code);
	hagen_json_int(&w, "elapsed_ms", (GetCurrentTimestamp() - t->started) / 1000);
	if (kind)
	{
		hagen_json_string(&w, "error_kind", kind);
		hagen_json_string(&w, "error", error);
		hagen_json_string(&w, "phase", connect_phase ? "connect" : "transfer");
		hagen_json_int(&w, "curl_code", (int) res);
	}
	hagen_json_object_start(&w, "headers");
	if (t->easy)
		add_headers_json(&w, t->easy);
	hagen_json_object_end(&w);
	if (t->resp_len > 0)
		hagen_json_text(&w, "body_text", t->resp, t->resp_len);
	if (kind == NULL && t->save_path && code >= 200 && code < 300)
	{
		hagen_json_string(&w, "file", t->save_rel);
		hagen_json_int(&w, "bytes", t->received);
	}
	hagen_json_object_end(&w);
	return buf.data;
}

/* Releases what a transfer holds outside palloc. */
static void
release_transfer(HagenTransfer *t)
{
	free(t->resp);
	t->resp = NULL;
	t->resp_len = t->resp_cap = 0;
	if (t->req_headers)
		curl_slist_free_all(t->req_headers);
	t->req_headers = NULL;
	if (t->easy)
		curl_easy_cleanup(t->easy);
	t->easy = NULL;
	if (t->in_fd >= 0)
		close(t->in_fd);
	t->in_fd = -1;
	if (t->out)
		fclose(t->out);
	t->out = NULL;
}

/* hagen_transfer_finish ends a transfer libcurl finished: files settled, outcome built. */
void
hagen_transfer_finish(HagenTransfer *t, CURLcode res)
{
	MemoryContext old = MemoryContextSwitchTo(t->cxt);
	long		code = 0;
	bool		ok;

	if (t->easy)
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
	if (res == CURLE_FILESIZE_EXCEEDED)
		t->too_large = true;	/* refused on its declared Content-Length */
	ok = res == CURLE_OK && !t->too_large && !t->io_errno && !t->guard_refused &&
		!t->in_errno && !t->in_short && code >= 200 && code < 300;
	if (t->out)
	{
		if (fclose(t->out) != 0 && ok)
		{
			t->io_errno = errno;
			ok = false;
		}
		t->out = NULL;
	}
	if (t->save_path)
	{
		if (ok && t->received == 0)
		{
			FILE	   *f = fopen(t->part_path, "wb");	/* an empty answer */

			if (f)
				fclose(f);
		}
		if (ok && rename(t->part_path, t->save_path) != 0)
			t->io_errno = errno;
		if (!ok || t->io_errno)
			unlink(t->part_path);
	}
	t->outcome = build_outcome(t, res);
	release_transfer(t);
	MemoryContextSwitchTo(old);
}

/* hagen_transfer_fail ends a transfer that could not go on, with an error of the given kind. */
void
hagen_transfer_fail(HagenTransfer *t, const char *kind, const char *error)
{
	StringInfoData buf;
	HagenJson	w;
	MemoryContext old = MemoryContextSwitchTo(t->cxt);

	initStringInfo(&buf);
	hagen_json_init(&w, &buf);
	hagen_json_object_start(&w, NULL);
	hagen_json_int(&w, "status", 0);
	hagen_json_string(&w, "phase", "connect");
	hagen_json_string(&w, "error_kind", kind);
	hagen_json_string(&w, "error", error);
	hagen_json_object_end(&w);
	t->outcome = buf.data;
	release_transfer(t);
	MemoryContextSwitchTo(old);
}

/* ---- starting transfers ---- */

/* Adds the effect's headers, then the authentication of its auth kind. */
static const char *
add_headers(HagenTransfer *t, Jsonb *effect, const char *method, const char *auth)
{
	Jsonb	   *hdrs = hagen_jsonb_object(effect, "headers");
	char	   *error = NULL;

	if (hdrs && JB_ROOT_IS_OBJECT(hdrs))
	{
		JsonbIterator *it = JsonbIteratorInit(&hdrs->root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		char	   *name = NULL;

		while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
				name = pnstrdup(v.val.string.val, v.val.string.len);
			else if (tok == WJB_VALUE && name && v.type == jbvString)
			{
				char	   *line = psprintf("%s: %.*s", name, v.val.string.len, v.val.string.val);

				if (strchr(line, '\r') || strchr(line, '\n'))
					return "a header of the effect contains a line break";
				t->req_headers = curl_slist_append(t->req_headers, line);
			}
		}
	}
	t->req_headers = curl_slist_append(t->req_headers, "Expect:");

	if (auth == NULL || strcmp(auth, "none") == 0)
		return NULL;
	if (strcmp(auth, "fal") == 0 || strcmp(auth, "xai") == 0)
	{
		bool		fal = auth[0] == 'f';
		const char *key = hagen_secret(fal ? HAGEN_SECRET_FAL_KEY : HAGEN_SECRET_XAI_KEY);
		char	   *line;

		if (key[0] == '\0')
			return fal ? "no Fal.ai key is configured (hagen.fal_key or FAL_KEY)"
				: "no xAI key is configured (hagen.xai_key or XAI_API_KEY)";
		line = psprintf("Authorization: %s %s", fal ? "Key" : "Bearer", key);
		t->req_headers = curl_slist_append(t->req_headers, line);
		explicit_bzero(line, strlen(line));
		pfree(line);
		return NULL;
	}
	if (strcmp(auth, "s3") == 0)
	{
		t->req_headers = hagen_s3_sign(t->req_headers, method, t->url, &error);
		return error;
	}
	return psprintf("unknown auth kind \"%s\"", auth);
}

/*
 * Opens the work file an upload streams its body from, and checks the
 * range the effect names: body_offset (default 0) and body_length
 * (default: to the end of the file).  Returns NULL, or why not.
 */
static char *
open_body(HagenTransfer *t, const char *body_file, int64 offset, int64 length)
{
	char	   *error = NULL;
	struct stat st;

	t->in_path = hagen_work_path(body_file, false, &error);
	if (t->in_path == NULL)
		return error;
	if ((t->in_fd = open(t->in_path, O_RDONLY | O_CLOEXEC)) < 0)
		return psprintf("could not open \"%s\": %m", t->in_path);
	if (fstat(t->in_fd, &st) != 0)
		return psprintf("could not stat \"%s\": %m", t->in_path);
	if (length < 0)
		length = (int64) st.st_size - offset;
	if (offset < 0 || length < 0 || offset + length > (int64) st.st_size)
		return psprintf("\"%s\" has %lld bytes: it has no bytes %lld to %lld",
						t->in_path, (long long) st.st_size, (long long) offset,
						(long long) (offset + length));
	t->in_start = t->in_pos = offset;
	t->in_end = offset + length;
	(void) posix_fadvise(t->in_fd, (off_t) offset, (off_t) length, POSIX_FADV_SEQUENTIAL);
	return NULL;
}

/*
 * hagen_transfer_start sets up the transfer of an effect for a claimed job
 * (see http_transfer.h).  An effect that cannot start ends at once, with an
 * error outcome.
 */
HagenTransfer *
hagen_transfer_start(MemoryContext parent, int64 job_id, int64 token, Jsonb *effect, CURL **easy)
{
	MemoryContext tcxt = AllocSetContextCreate(parent, "hagenkit transfer",
											   ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(tcxt);
	HagenTransfer *t = palloc0(sizeof(HagenTransfer));
	char	   *type = hagen_jsonb_text(effect, "type");
	char	   *method = hagen_jsonb_text(effect, "method");
	char	   *auth = hagen_jsonb_text(effect, "auth");
	char	   *body_file = hagen_jsonb_text(effect, "body_file");
	char	   *error = NULL;
	const char *herr;
	long		timeout_ms = (long) hagen_jsonb_int(effect, "timeout_ms", 60000);
	long		connect_ms = (long) hagen_jsonb_int(effect, "connect_timeout_ms", 15000);
	CURL	   *e;

	*easy = NULL;
	t->cxt = tcxt;
	t->in_fd = -1;
	t->job_id = job_id;
	t->token = token;
	t->started = GetCurrentTimestamp();
	t->url = hagen_jsonb_text(effect, "url");
	t->guard = hagen_jsonb_bool(effect, "guard", false);
	t->follow = hagen_jsonb_bool(effect, "follow_redirects", false) && t->guard;
	t->max_bytes = Min(hagen_jsonb_int(effect, "max_bytes", hagen_max_download_bytes),
					   (int64) hagen_max_download_bytes);
	t->save_rel = hagen_jsonb_text(effect, "save_to");
	if (method == NULL)
		method = "GET";

	/* Local effects: done at once, their outcome queued like a transfer's. */
	if (type && (strcmp(type, "noop") == 0 || strcmp(type, "remove") == 0))
	{
		t->outcome = type[0] == 'n' ? pstrdup("{\"type\":\"noop\"}")
			: hagen_work_remove(hagen_jsonb_text(effect, "path"));
		MemoryContextSwitchTo(old);
		return t;
	}
	if (type == NULL || strcmp(type, "http") != 0)
	{
		hagen_transfer_fail(t, "effect", psprintf("the dispatcher cannot carry out an effect of type \"%s\"",
										  type ? type : "(none)"));
		MemoryContextSwitchTo(old);
		return t;
	}
	if (t->url == NULL || (pg_strncasecmp(t->url, "http://", 7) != 0 &&
						   pg_strncasecmp(t->url, "https://", 8) != 0))
	{
		hagen_transfer_fail(t, "guard", psprintf("%s: only http:// and https:// URLs may be fetched",
										 t->url ? t->url : "(no URL)"));
		MemoryContextSwitchTo(old);
		return t;
	}
	t->trusted = !t->guard || hagen_netguard_host_trusted(t->url);
	if (t->save_rel)
	{
		t->save_path = hagen_work_path(t->save_rel, true, &error);
		if (t->save_path == NULL)
		{
			hagen_transfer_fail(t, "effect", error);
			MemoryContextSwitchTo(old);
			return t;
		}
		t->part_path = psprintf("%s.part", t->save_path);
		/* A file already downloaded is not fetched again when so asked. */
		if (hagen_jsonb_bool(effect, "unless_exists", false) &&
			hagen_work_file_size(t->save_path) > 0)
		{
			StringInfoData buf;
			HagenJson	w;

			initStringInfo(&buf);
			hagen_json_init(&w, &buf);
			hagen_json_object_start(&w, NULL);
			hagen_json_int(&w, "status", 200);
			hagen_json_bool(&w, "existing", true);
			hagen_json_int(&w, "bytes", hagen_work_file_size(t->save_path));
			hagen_json_string(&w, "file", t->save_rel);
			hagen_json_object_end(&w);
			t->outcome = buf.data;
			MemoryContextSwitchTo(old);
			return t;
		}
	}
	if (body_file)
	{
		error = open_body(t, body_file, hagen_jsonb_int(effect, "body_offset", 0),
						  hagen_jsonb_int(effect, "body_length", -1));
		if (error)
		{
			hagen_transfer_fail(t, "io", error);
			MemoryContextSwitchTo(old);
			return t;
		}
	}

	e = t->easy = curl_easy_init();
	if (e == NULL)
	{
		hagen_transfer_fail(t, "transport", "could not create a libcurl handle");
		MemoryContextSwitchTo(old);
		return t;
	}
	curl_easy_setopt(e, CURLOPT_URL, t->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	curl_easy_setopt(e, CURLOPT_USERAGENT, "hagenkit/" HAGEN_VERSION);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long) hagen_stall_timeout_s);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
	if (t->save_path)
		curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) t->max_bytes);

	if (t->in_fd >= 0)
	{
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
		curl_easy_setopt(e, CURLOPT_READDATA, t);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, t);
		curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, (long) UPLOAD_BUFFER);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t) (t->in_end - t->in_start));
		if (strcmp(method, "PUT") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}
	else if (strcmp(method, "GET") == 0)
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	else if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else
	{
		t->body = hagen_jsonb_value_json(effect, "body");
		if (t->body == NULL)
			t->body = hagen_jsonb_text(effect, "body_text");
		if (t->body == NULL)
			t->body = "";
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(t->body));
		if (strcmp(method, "POST") != 0)
			curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}

	herr = add_headers(t, effect, method, auth);
	if (herr)
	{
		hagen_transfer_fail(t, "config", herr);
		MemoryContextSwitchTo(old);
		return t;
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->req_headers);
	MemoryContextSwitchTo(old);
	*easy = e;
	return t;
}

/*
 * hagen_transfer_follow sets a guarded download that was answered with a
 * redirect to its next hop, whose address the guard checks again; false
 * when there is none to follow.
 */
bool
hagen_transfer_follow(HagenTransfer *t)
{
	char	   *next = NULL;
	long		code = 0;

	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
	if (!t->follow || code < 300 || code >= 400 || code == 304)
		return false;
	curl_easy_getinfo(t->easy, CURLINFO_REDIRECT_URL, &next);
	if (next == NULL || t->redirects >= MAX_REDIRECTS)
		return false;
	if (pg_strncasecmp(next, "http://", 7) != 0 && pg_strncasecmp(next, "https://", 8) != 0)
		return false;
	t->redirects++;
	t->url = MemoryContextStrdup(t->cxt, next);
	t->trusted = hagen_netguard_host_trusted(t->url);
	t->resp_len = 0;
	curl_easy_setopt(t->easy, CURLOPT_URL, t->url);
	return true;
}

/*
 * hagen_transfer_take_outcome: the outcome of an ended transfer, copied
 * into the caller's context; the transfer's own memory is freed.
 */
char *
hagen_transfer_take_outcome(HagenTransfer *t, int64 *job_id, int64 *token)
{
	char	   *outcome = pstrdup(t->outcome);

	*job_id = t->job_id;
	*token = t->token;
	MemoryContextDelete(t->cxt);
	return outcome;
}
