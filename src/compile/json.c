/*
 * json.c: a recursive-descent JSON parser (RFC 8259) with a depth limit,
 * and a string writer.
 */
#include "json.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

typedef struct
{
	const char *p;
	const char *start;
	char	   *err;
	size_t		errlen;
	bool		failed;
} Parser;

static Json *parse_value(Parser *ps, int depth);

static void
fail(Parser *ps, const char *fmt, ...)
{
	va_list		ap;
	int			n;

	if (ps->failed)
		return;
	ps->failed = true;
	n = snprintf(ps->err, ps->errlen, "at offset %ld: ", (long) (ps->p - ps->start));
	if (n < 0 || (size_t) n >= ps->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->errlen - n, fmt, ap);
	va_end(ap);
}

static void *
xcalloc(size_t n, size_t size)
{
	void	   *p = calloc(n ? n : 1, size);

	if (!p)
	{
		fputs("{\"error\":{\"message\":\"out of memory\"}}\n", stdout);
		exit(1);
	}
	return p;
}

static void
skip_ws(Parser *ps)
{
	while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
		ps->p++;
}

static void
put_utf8(char **out, uint32_t cp)
{
	char	   *o = *out;

	if (cp < 0x80)
		*o++ = (char) cp;
	else if (cp < 0x800)
	{
		*o++ = (char) (0xC0 | (cp >> 6));
		*o++ = (char) (0x80 | (cp & 0x3F));
	}
	else if (cp < 0x10000)
	{
		*o++ = (char) (0xE0 | (cp >> 12));
		*o++ = (char) (0x80 | ((cp >> 6) & 0x3F));
		*o++ = (char) (0x80 | (cp & 0x3F));
	}
	else
	{
		*o++ = (char) (0xF0 | (cp >> 18));
		*o++ = (char) (0x80 | ((cp >> 12) & 0x3F));
		*o++ = (char) (0x80 | ((cp >> 6) & 0x3F));
		*o++ = (char) (0x80 | (cp & 0x3F));
	}
	*out = o;
}

static int
hex4(Parser *ps, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++)
	{
		char		c = ps->p[i];

		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= (uint32_t) (c - '0');
		else if (c >= 'a' && c <= 'f')
			*v |= (uint32_t) (c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			*v |= (uint32_t) (c - 'A' + 10);
		else
		{
			fail(ps, "bad \\u escape");
			return -1;
		}
	}
	ps->p += 4;
	return 0;
}

/* Parses a string literal; ps->p is at the opening quote. */
static char *
parse_string(Parser *ps)
{
	const char *q = ps->p + 1;
	size_t		len = 0;
	char	   *buf,
			   *o;

	/* Upper bound of the decoded length: the literal's length. */
	while (*q && *q != '"')
	{
		if (*q == '\\' && q[1])
			q++;
		q++;
		len++;
	}
	if (*q != '"')
	{
		fail(ps, "unterminated string");
		return NULL;
	}
	buf = o = xcalloc(2 * len + 8, 1);
	ps->p++;
	while (*ps->p != '"')
	{
		unsigned char c = (unsigned char) *ps->p;

		if (c < 0x20)
		{
			fail(ps, "control character in string");
			free(buf);
			return NULL;
		}
		if (c != '\\')
		{
			*o++ = (char) c;
			ps->p++;
			continue;
		}
		ps->p++;
		switch (*ps->p++)
		{
			case '"': *o++ = '"'; break;
			case '\\': *o++ = '\\'; break;
			case '/': *o++ = '/'; break;
			case 'b': *o++ = '\b'; break;
			case 'f': *o++ = '\f'; break;
			case 'n': *o++ = '\n'; break;
			case 'r': *o++ = '\r'; break;
			case 't': *o++ = '\t'; break;
			case 'u':
				{
					uint32_t	cp,
								lo;

					if (hex4(ps, &cp) < 0)
					{
						free(buf);
						return NULL;
					}
					if (cp >= 0xD800 && cp <= 0xDBFF && ps->p[0] == '\\' && ps->p[1] == 'u')
					{
						ps->p += 2;
						if (hex4(ps, &lo) < 0)
						{
							free(buf);
							return NULL;
						}
						if (lo >= 0xDC00 && lo <= 0xDFFF)
							cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					if (cp == 0)
					{
						fail(ps, "\\u0000 is not allowed");
						free(buf);
						return NULL;
					}
					put_utf8(&o, cp);
					break;
				}
			default:
				fail(ps, "bad escape");
				free(buf);
				return NULL;
		}
	}
	ps->p++;
	*o = '\0';
	return buf;
}

static Json *
parse_container(Parser *ps, int depth, bool object)
{
	Json	   *j = xcalloc(1, sizeof(Json));
	int			cap = 8;
	char		close = object ? '}' : ']';

	j->type = object ? JSON_OBJECT : JSON_ARRAY;
	j->items = xcalloc(cap, sizeof(Json *));
	if (object)
		j->keys = xcalloc(cap, sizeof(char *));
	ps->p++;
	skip_ws(ps);
	if (*ps->p == close)
	{
		ps->p++;
		return j;
	}
	for (;;)
	{
		char	   *key = NULL;
		Json	   *v;

		skip_ws(ps);
		if (object)
		{
			if (*ps->p != '"')
			{
				fail(ps, "expected a member name");
				break;
			}
			if (!(key = parse_string(ps)))
				break;
			skip_ws(ps);
			if (*ps->p != ':')
			{
				free(key);
				fail(ps, "expected ':'");
				break;
			}
			ps->p++;
		}
		if (!(v = parse_value(ps, depth + 1)))
		{
			free(key);
			break;
		}
		if (j->count == cap)
		{
			cap *= 2;
			j->items = realloc(j->items, cap * sizeof(Json *));
			if (object)
				j->keys = realloc(j->keys, cap * sizeof(char *));
			if (!j->items || (object && !j->keys))
			{
				fputs("{\"error\":{\"message\":\"out of memory\"}}\n", stdout);
				exit(1);
			}
		}
		if (object)
			j->keys[j->count] = key;
		j->items[j->count++] = v;
		skip_ws(ps);
		if (*ps->p == ',')
		{
			ps->p++;
			continue;
		}
		if (*ps->p == close)
		{
			ps->p++;
			return j;
		}
		fail(ps, "expected ',' or '%c'", close);
		break;
	}
	json_free(j);
	return NULL;
}

static Json *
parse_value(Parser *ps, int depth)
{
	Json	   *j;

	if (depth > JSON_MAX_DEPTH)
	{
		fail(ps, "nested too deeply");
		return NULL;
	}
	skip_ws(ps);
	switch (*ps->p)
	{
		case '{':
			return parse_container(ps, depth, true);
		case '[':
			return parse_container(ps, depth, false);
		case '"':
			{
				char	   *s = parse_string(ps);

				if (!s)
					return NULL;
				j = xcalloc(1, sizeof(Json));
				j->type = JSON_STRING;
				j->string = s;
				return j;
			}
		default:
			break;
	}
	j = xcalloc(1, sizeof(Json));
	if (strncmp(ps->p, "null", 4) == 0)
	{
		j->type = JSON_NULL;
		ps->p += 4;
	}
	else if (strncmp(ps->p, "true", 4) == 0)
	{
		j->type = JSON_BOOL;
		j->boolean = true;
		ps->p += 4;
	}
	else if (strncmp(ps->p, "false", 5) == 0)
	{
		j->type = JSON_BOOL;
		ps->p += 5;
	}
	else if (*ps->p == '-' || isdigit((unsigned char) *ps->p))
	{
		char	   *end;

		errno = 0;
		j->type = JSON_NUMBER;
		j->number = strtod(ps->p, &end);
		if (end == ps->p || errno == ERANGE)
		{
			fail(ps, "bad number");
			free(j);
			return NULL;
		}
		ps->p = end;
	}
	else
	{
		fail(ps, *ps->p ? "unexpected character '%c'" : "unexpected end of text", *ps->p);
		free(j);
		return NULL;
	}
	return j;
}

Json *
json_parse(const char *text, char *err, size_t errlen)
{
	Parser		ps = {text, text, err, errlen, false};
	Json	   *j = parse_value(&ps, 0);

	if (j)
	{
		skip_ws(&ps);
		if (*ps.p)
		{
			fail(&ps, "text after the value");
			json_free(j);
			return NULL;
		}
	}
	return j;
}

void
json_free(Json *j)
{
	if (!j)
		return;
	for (int i = 0; i < j->count; i++)
	{
		json_free(j->items[i]);
		if (j->keys)
			free(j->keys[i]);
	}
	free(j->items);
	free(j->keys);
	free(j->string);
	free(j);
}

const Json *
json_get(const Json *obj, const char *key)
{
	if (!obj || obj->type != JSON_OBJECT)
		return NULL;
	for (int i = 0; i < obj->count; i++)
		if (strcmp(obj->keys[i], key) == 0)
			return obj->items[i];
	return NULL;
}

void
json_write_string(FILE *out, const char *s)
{
	if (!s)
	{
		fputs("null", out);
		return;
	}
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		switch (*p)
		{
			case '"': fputs("\\\"", out); break;
			case '\\': fputs("\\\\", out); break;
			case '\n': fputs("\\n", out); break;
			case '\r': fputs("\\r", out); break;
			case '\t': fputs("\\t", out); break;
			default:
				if (*p < 0x20)
					fprintf(out, "\\u%04x", *p);
				else
					fputc(*p, out);
		}
	}
	fputc('"', out);
}
