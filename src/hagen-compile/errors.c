/*
 * errors.c: how hagen-compile fails.  One JSON line on stdout, partial
 * outputs removed, exit status 1.
 */
#include "hc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define HC_MAX_CLEANUP 4

static const char *cleanup[HC_MAX_CLEANUP];
static int	ncleanup;

void
hc_remove_on_failure(const char *path)
{
	if (ncleanup < HC_MAX_CLEANUP)
		cleanup[ncleanup++] = path;
}

void
hc_keep_files(void)
{
	ncleanup = 0;
}

noreturn void
hc_fail(int segment, const char *fmt,...)
{
	char		msg[2048];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (int i = 0; i < ncleanup; i++)
		unlink(cleanup[i]);
	{
		json_t	   *e = json_pack("{s:o}", "message", hc_json_text(msg));

		if (segment > 0)
			json_object_set_new(e, "segment", json_integer(segment));
		hc_emit(json_pack("{s:o}", "error", e));
	}
	exit(1);
}

const char *
hc_err(int averror)
{
	static char buf[AV_ERROR_MAX_STRING_SIZE];

	return av_make_error_string(buf, sizeof(buf), averror);
}

void *
hc_alloc(size_t size)
{
	void	   *p = calloc(1, size ? size : 1);

	if (!p)
		hc_fail(0, "out of memory");
	return p;
}
