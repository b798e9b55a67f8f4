/*
 * json.h: a small JSON reader for hagen-compile's manifest, and writers for
 * the lines it prints.  The manifest is small and written by the compile
 * worker, but it is still checked: every access says what it expected.
 */
#ifndef HAGEN_COMPILE_JSON_H
#define HAGEN_COMPILE_JSON_H

#include <stdbool.h>
#include <stdio.h>

typedef enum
{
	JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
} JsonType;

typedef struct Json
{
	JsonType	type;
	bool		boolean;
	double		number;
	char	   *string;			/* JSON_STRING: UTF-8, NUL-terminated */
	int			count;			/* JSON_ARRAY / JSON_OBJECT: members */
	char	  **keys;			/* JSON_OBJECT: member names */
	struct Json **items;		/* JSON_ARRAY / JSON_OBJECT: members */
} Json;

/* Parses text; on failure returns NULL and writes a message to err. */
extern Json *json_parse(const char *text, char *err, size_t errlen);
extern void json_free(Json *j);
/* The member called key of an object, or NULL. */
extern const Json *json_get(const Json *obj, const char *key);

/* Writes s as a JSON string literal (quotes included). */
extern void json_write_string(FILE *out, const char *s);

#endif
