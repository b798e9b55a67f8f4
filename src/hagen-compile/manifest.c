/*
 * manifest.c: reads and checks the manifest of `hagen-compile compile`,
 * parsed by jansson.  The manifest is what SQL emitted (src/sql/60_compile.sql)
 * exactly; a field of the wrong type or out of range fails naming the field
 * and the value.  Paths are absolute, or relative to the directory the
 * helper runs in (the compile worker runs it in hagen.work_dir).
 */
#include "manifest.h"

#include <string.h>

#define HC_MAX_MANIFEST_ERROR 200

/* The value as JSON text, shortened, for a message. */
static const char *
shown(const json_t *v)
{
	static char buf[HC_MAX_MANIFEST_ERROR + 4];
	char	   *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

	snprintf(buf, sizeof(buf), "%.*s%s", HC_MAX_MANIFEST_ERROR, text ? text : "?",
			 text && strlen(text) > HC_MAX_MANIFEST_ERROR ? "..." : "");
	free(text);
	return buf;
}

/* A string member; NULL when absent or null and not required. */
static const char *
string_member(const json_t *obj, const char *key, const char *where, int segment, bool required)
{
	const json_t *v = json_object_get(obj, key);

	if (v == NULL || json_is_null(v))
	{
		if (required)
			hc_fail(segment, "the manifest has no \"%s\" in %s", key, where);
		return NULL;
	}
	if (!json_is_string(v) || json_string_length(v) == 0)
		hc_fail(segment, "the manifest's \"%s\" in %s must be a non-empty string, not %s", key, where,
				shown(v));
	if (strlen(json_string_value(v)) != json_string_length(v))
		hc_fail(segment, "the manifest's \"%s\" in %s contains a NUL character", key, where);
	return json_string_value(v);
}

/* A number member in [lo, hi]; fallback when absent or null. */
static double
number_member(const json_t *obj, const char *key, const char *where, int segment, double fallback,
			  double lo, double hi)
{
	const json_t *v = json_object_get(obj, key);

	if (v == NULL || json_is_null(v))
		return fallback;
	if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
		hc_fail(segment, "the manifest's \"%s\" in %s must be a number from %g to %g, not %s", key,
				where, lo, hi, shown(v));
	return json_number_value(v);
}

static void
read_segment(Manifest *m, const json_t *s, int i)
{
	char		where[32];
	const char *label;
	const char *kind;

	snprintf(where, sizeof(where), "segment %d", i + 1);
	if (!json_is_object(s))
		hc_fail(i + 1, "the manifest's segment %d must be an object, not %s", i + 1, shown(s));
	m->segs[i].index = i + 1;
	m->segs[i].file = string_member(s, "file", where, i + 1, true);
	label = string_member(s, "label", where, i + 1, false);
	if (label == NULL)
	{
		char	   *fallback = hc_alloc(32);

		snprintf(fallback, 32, "clip %d", i + 1);
		label = fallback;
	}
	m->segs[i].label = label;
	kind = string_member(s, "kind", where, i + 1, false);
	if (kind && strcmp(kind, "clip") != 0 && strcmp(kind, "transition") != 0)
		hc_fail(i + 1, "the manifest's \"kind\" in %s must be \"clip\" or \"transition\", not \"%s\"",
				where, kind);
	m->segs[i].kind = kind ? kind : "clip";
	m->segs[i].crossfade = number_member(s, "crossfade", where, i + 1, 0, 0, HC_MAX_CROSSFADE);
	if (i == 0 && m->segs[i].crossfade > 0)
		hc_fail(1, "the manifest's first segment has a crossfade: there is nothing before it to fade from");
	m->any_crossfade = m->any_crossfade || m->segs[i].crossfade > 0;
}

void
manifest_read(const char *path, Manifest *m)
{
	json_error_t err;
	json_t	   *root;
	const json_t *segs;
	const json_t *music;
	const char *aspect;
	const char *mode;

	memset(m, 0, sizeof(*m));
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
	if (root == NULL)
	{
		if (err.line < 0)
			hc_fail(0, "the manifest %s cannot be read: %s", path, err.text);
		hc_fail(0, "the manifest %s is not valid JSON: %s (line %d, column %d)", path, err.text,
				err.line, err.column);
	}
	if (!json_is_object(root))
		hc_fail(0, "the manifest must be a JSON object, not %s", shown(root));

	segs = json_object_get(root, "segments");
	if (segs == NULL || json_is_null(segs))
		hc_fail(0, "the manifest has no \"segments\": there is nothing to compile");
	if (!json_is_array(segs))
		hc_fail(0, "the manifest's \"segments\" must be an array, not %s", shown(segs));
	if (json_array_size(segs) == 0)
		hc_fail(0, "the manifest's \"segments\" is empty: there is nothing to compile");
	if (json_array_size(segs) > HC_MAX_SEGMENTS)
		hc_fail(0, "the manifest has %zu segments; at most %d are allowed", json_array_size(segs),
				HC_MAX_SEGMENTS);
	m->nsegs = (int) json_array_size(segs);
	m->segs = hc_alloc(sizeof(SegInfo) * m->nsegs);
	for (int i = 0; i < m->nsegs; i++)
		read_segment(m, json_array_get(segs, i), i);

	music = json_object_get(root, "music");
	if (json_is_object(music))
	{
		m->music_file = string_member(music, "file", "music", 0, true);
		m->music_volume = number_member(music, "volume", "music", 0, 0.3, 0, 1);
	}
	else if (music && !json_is_null(music))
		hc_fail(0, "the manifest's \"music\" must be an object or null, not %s", shown(music));
	m->video_volume = number_member(root, "video_volume", "the manifest", 0, 1.0, 0, 1);

	aspect = string_member(root, "aspect_ratio", "the manifest", 0, false);
	m->aspect_w = 16;
	m->aspect_h = 9;
	if (aspect && strcmp(aspect, "9:16") == 0)
		m->aspect_w = 9, m->aspect_h = 16;
	else if (aspect && strcmp(aspect, "1:1") == 0)
		m->aspect_w = 1, m->aspect_h = 1;
	else if (aspect && strcmp(aspect, "16:9") != 0)
		hc_fail(0, "the manifest's \"aspect_ratio\" must be one of 16:9, 9:16, 1:1, not \"%s\"", aspect);

	m->output = string_member(root, "output", "the manifest", 0, true);
	m->thumbnail = string_member(root, "thumbnail", "the manifest", 0, false);
	mode = string_member(root, "mode", "the manifest", 0, false);
	if (mode && strcmp(mode, "normalize") == 0)
		m->force_normalize = true;
	else if (mode && strcmp(mode, "auto") != 0)
		hc_fail(0, "the manifest's \"mode\" must be \"auto\" or \"normalize\", not \"%s\"", mode);
	/* root is kept: the strings above point into it. */
}
