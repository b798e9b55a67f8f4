/*-------------------------------------------------------------------------
 *
 * effect.c
 *	  Reading effects (jsonb from SQL) and writing outcomes (JSON to SQL),
 *	  and resolving paths in the work directory.
 *
 * IDENTIFICATION
 *	  src/effect.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include <sys/stat.h>

#include "common/jsonapi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/numeric.h"

/* The value of a key of a jsonb object, or NULL. */
static JsonbValue *
get_key(Jsonb *jb, const char *key)
{
	JsonbValue	k;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
}

/* hagen_jsonb_text: a key's value as text (strings unquoted), or NULL. */
char *
hagen_jsonb_text(Jsonb *jb, const char *key)
{
	JsonbValue *v = get_key(jb, key);

	if (v == NULL || v->type == jbvNull)
		return NULL;
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			return NULL;
	}
}

/* hagen_jsonb_bool: a boolean key, or dflt. */
bool
hagen_jsonb_bool(Jsonb *jb, const char *key, bool dflt)
{
	JsonbValue *v = get_key(jb, key);

	if (v && v->type == jbvBool)
		return v->val.boolean;
	return dflt;
}

/* hagen_jsonb_int: an integer key (number or numeric string), or dflt. */
int64
hagen_jsonb_int(Jsonb *jb, const char *key, int64 dflt)
{
	char	   *s = hagen_jsonb_text(jb, key);
	char	   *end;
	int64		v;

	if (s == NULL)
		return dflt;
	v = strtoll(s, &end, 10);
	if (end == s)
		v = dflt;
	pfree(s);
	return v;
}

/* hagen_jsonb_object: a key's object or array value as its own Jsonb, or NULL. */
Jsonb *
hagen_jsonb_object(Jsonb *jb, const char *key)
{
	JsonbValue *v = get_key(jb, key);

	if (v == NULL || v->type != jbvBinary)
		return NULL;
	return JsonbValueToJsonb(v);
}

/* hagen_jsonb_value_json: a key's value serialized as JSON text, or NULL. */
char *
hagen_jsonb_value_json(Jsonb *jb, const char *key)
{
	JsonbValue *v = get_key(jb, key);
	Jsonb	   *one;

	if (v == NULL)
		return NULL;
	if (v->type == jbvBinary)
		return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	one = JsonbValueToJsonb(v);
	return JsonbToCString(NULL, &one->root, VARSIZE(one));
}

/* hagen_json_string appends "key": "value" (value escaped; NULL as null). */
void
hagen_json_string(StringInfo buf, const char *key, const char *value)
{
	if (buf->len > 1 && buf->data[buf->len - 1] != '{')
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
	if (value)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

/*
 * hagen_work_path resolves a path relative to the work directory.  Paths
 * come from SQL; absolute paths and ".." segments are refused so that no
 * job can read or write outside the work directory.  With create_dirs, the
 * parent directories are made.  Returns NULL and sets *error when refused.
 */
char *
hagen_work_path(const char *relative, bool create_dirs, char **error)
{
	char	   *path;
	char	   *dir;
	const char *p;

	*error = NULL;
	if (relative == NULL || relative[0] == '\0' || relative[0] == '/')
	{
		*error = psprintf("work file path \"%s\" must be relative", relative ? relative : "");
		return NULL;
	}
	for (p = relative; *p; p++)
	{
		if ((p == relative || p[-1] == '/') && p[0] == '.' && p[1] == '.' &&
			(p[2] == '/' || p[2] == '\0'))
		{
			*error = psprintf("work file path \"%s\" must not contain \"..\"", relative);
			return NULL;
		}
	}
	path = psprintf("%s/%s", hagen_effective_work_dir(), relative);
	if (create_dirs)
	{
		dir = pstrdup(path);
		get_parent_directory(dir);
		if (pg_mkdir_p(dir, S_IRWXU) != 0 && errno != EEXIST)
		{
			*error = psprintf("could not create directory \"%s\": %m", dir);
			return NULL;
		}
		pfree(dir);
	}
	return path;
}
