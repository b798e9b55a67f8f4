/*-------------------------------------------------------------------------
 *
 * effect.c
 *	  Reading effects (jsonb from SQL).
 *
 * IDENTIFICATION
 *	  src/effect.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "utils/builtins.h"
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
