/*
 * emit.c: the lines hagen-compile prints.  Everything it reports is one
 * JSON object per line on stdout (progress, then a result or an error),
 * written by jansson and flushed at once: the compile worker reads the
 * lines as they come.
 */
#include "hc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

double
hc_cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

void
hc_emit(json_t *line)
{
	char	   *text;

	if (line == NULL)
	{
		/* Only when jansson could not allocate. */
		fputs("{\"error\":{\"message\":\"out of memory\"}}\n", stdout);
		fflush(stdout);
		exit(1);
	}
	text = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(10));
	json_decref(line);
	if (text == NULL)
	{
		fputs("{\"error\":{\"message\":\"out of memory\"}}\n", stdout);
		fflush(stdout);
		exit(1);
	}
	fputs(text, stdout);
	fputc('\n', stdout);
	fflush(stdout);
	free(text);
}

json_t *
hc_json_text(const char *text)
{
	json_t	   *s = json_string(text);
	char	   *copy;

	if (s != NULL)
		return s;
	/* Not UTF-8 (a file name, say): keep what is ASCII. */
	copy = strdup(text);
	if (copy == NULL)
		return NULL;
	for (char *p = copy; *p; p++)
		if ((unsigned char) *p >= 0x80)
			*p = '?';
	s = json_string(copy);
	free(copy);
	return s;
}
