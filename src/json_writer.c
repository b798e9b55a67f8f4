/*-------------------------------------------------------------------------
 *
 * json_writer.c
 *	  Writing JSON text (outcomes, batches of outcomes, effects) with
 *	  PostgreSQL's own escaping, escape_json().
 *
 * A HagenJson appends to a StringInfo and remembers, for each object or
 * array it has open, whether a member was written yet: commas come from
 * that, never from looking at the text already written.  Members take a
 * key inside objects and NULL inside arrays (and for the top-level value).
 *
 * Outcomes are written as text rather than built as jsonb: SQL receives
 * them as text either way (one outcome, or a batch in one array), and
 * text is the cheaper of the two to produce on the dispatcher's hot path.
 *
 * IDENTIFICATION
 *	  src/json_writer.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "mb/pg_wchar.h"
#include "utils/json.h"

/* hagen_json_init starts writing into buf (appending to what it holds). */
void
hagen_json_init(HagenJson *w, StringInfo buf)
{
	w->buf = buf;
	w->depth = 0;
	w->has_members[0] = false;
}

/* Starts a member: the comma when one came before, then the key. */
static void
member(HagenJson *w, const char *key)
{
	if (w->has_members[w->depth])
		appendStringInfoChar(w->buf, ',');
	w->has_members[w->depth] = true;
	if (key)
	{
		escape_json(w->buf, key);
		appendStringInfoChar(w->buf, ':');
	}
}

static void
open_container(HagenJson *w, const char *key, char bracket)
{
	member(w, key);
	if (w->depth + 1 >= HAGEN_JSON_MAX_DEPTH)
		elog(ERROR, "JSON nested deeper than %d levels", HAGEN_JSON_MAX_DEPTH - 1);
	appendStringInfoChar(w->buf, bracket);
	w->has_members[++w->depth] = false;
}

static void
close_container(HagenJson *w, char bracket)
{
	Assert(w->depth > 0);
	w->depth--;
	appendStringInfoChar(w->buf, bracket);
}

void
hagen_json_object_start(HagenJson *w, const char *key)
{
	open_container(w, key, '{');
}

void
hagen_json_object_end(HagenJson *w)
{
	close_container(w, '}');
}

void
hagen_json_array_start(HagenJson *w, const char *key)
{
	open_container(w, key, '[');
}

void
hagen_json_array_end(HagenJson *w)
{
	close_container(w, ']');
}

/* hagen_json_string writes a string member; NULL is written as null. */
void
hagen_json_string(HagenJson *w, const char *key, const char *value)
{
	member(w, key);
	if (value)
		escape_json(w->buf, value);
	else
		appendStringInfoString(w->buf, "null");
}

/*
 * hagen_json_text writes len bytes received from the network as a JSON
 * string: NULs and bytes that are not UTF-8 become '?'.  value[len] must
 * be '\0'.  Valid text (the usual case) is escaped in place, without a copy.
 */
void
hagen_json_text(HagenJson *w, const char *key, const char *value, size_t len)
{
	const char *s = value;
	size_t		left = len;
	StringInfoData clean;

	Assert(value[len] == '\0');
	member(w, key);
	if ((size_t) pg_encoding_verifymbstr(PG_UTF8, value, (int) len) == len)
	{
		escape_json(w->buf, value);
		return;
	}
	initStringInfo(&clean);
	while (left > 0)
	{
		int			ok = pg_encoding_verifymbstr(PG_UTF8, s, (int) left);

		appendBinaryStringInfo(&clean, s, ok);
		s += ok;
		left -= ok;
		if (left > 0)
		{
			appendStringInfoChar(&clean, '?');
			s++;
			left--;
		}
	}
	escape_json(w->buf, clean.data);
	pfree(clean.data);
}

void
hagen_json_int(HagenJson *w, const char *key, int64 value)
{
	member(w, key);
	appendStringInfo(w->buf, INT64_FORMAT, value);
}

void
hagen_json_bool(HagenJson *w, const char *key, bool value)
{
	member(w, key);
	appendStringInfoString(w->buf, value ? "true" : "false");
}

/*
 * hagen_json_raw writes a value that is JSON text already (an outcome in a
 * batch, a number SQL gave as text, the helper's result); NULL is null.
 */
void
hagen_json_raw(HagenJson *w, const char *key, const char *json)
{
	member(w, key);
	appendStringInfoString(w->buf, json ? json : "null");
}
