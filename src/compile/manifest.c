/*
 * manifest.c: reads and checks the manifest written by the compile worker.
 */
#include "manifest.h"
#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HC_MAX_MANIFEST (16 * 1024 * 1024)

static const char *
path_member(const Json *obj, const char *key, const char *where, bool required)
{
	const Json *v = json_get(obj, key);

	if (!v || v->type == JSON_NULL)
	{
		if (required)
			hc_fail(0, "the manifest has no \"%s\" in %s", key, where);
		return NULL;
	}
	if (v->type != JSON_STRING || v->string[0] != '/')
		hc_fail(0, "the manifest's \"%s\" in %s must be an absolute path", key, where);
	return v->string;
}

static double
number_member(const Json *obj, const char *key, double fallback, double lo, double hi)
{
	const Json *v = json_get(obj, key);

	if (!v || v->type == JSON_NULL)
		return fallback;
	if (v->type != JSON_NUMBER || !(v->number >= lo && v->number <= hi))
		hc_fail(0, "the manifest's \"%s\" must be a number from %g to %g", key, lo, hi);
	return v->number;
}

void
manifest_read(const char *path, Manifest *m)
{
	FILE	   *f = fopen(path, "rb");
	char	   *text;
	size_t		len;
	char		err[256];
	Json	   *root;
	const Json *segs,
			   *music,
			   *aspect,
			   *mode;

	memset(m, 0, sizeof(*m));
	if (!f)
		hc_fail(0, "the manifest %s cannot be opened: %s", path, strerror(errno));
	text = hc_alloc(HC_MAX_MANIFEST + 1);
	len = fread(text, 1, HC_MAX_MANIFEST + 1, f);
	fclose(f);
	if (len > HC_MAX_MANIFEST)
		hc_fail(0, "the manifest %s is larger than 16 MB", path);
	text[len] = '\0';
	if (!(root = json_parse(text, err, sizeof(err))))
		hc_fail(0, "the manifest %s is not valid JSON (%s)", path, err);
	free(text);
	if (root->type != JSON_OBJECT)
		hc_fail(0, "the manifest must be a JSON object");

	segs = json_get(root, "segments");
	if (!segs || segs->type != JSON_ARRAY || segs->count == 0)
		hc_fail(0, "the manifest has no segments: there is nothing to compile");
	if (segs->count > HC_MAX_SEGMENTS)
		hc_fail(0, "the manifest has %d segments; at most %d are allowed", segs->count,
				HC_MAX_SEGMENTS);
	m->nsegs = segs->count;
	m->segs = hc_alloc(sizeof(SegInfo) * segs->count);
	for (int i = 0; i < segs->count; i++)
	{
		const Json *s = segs->items[i];
		const Json *label = json_get(s, "label");
		const Json *kind = json_get(s, "kind");
		char		where[64];
		char	   *fallback;

		snprintf(where, sizeof(where), "segment %d", i + 1);
		if (s->type != JSON_OBJECT)
			hc_fail(i + 1, "the manifest's segment %d is not an object", i + 1);
		m->segs[i].index = i + 1;
		m->segs[i].file = path_member(s, "file", where, true);
		if (label && label->type == JSON_STRING && label->string[0])
			m->segs[i].label = label->string;
		else
		{
			fallback = hc_alloc(32);
			snprintf(fallback, 32, "clip %d", i + 1);
			m->segs[i].label = fallback;
		}
		m->segs[i].kind = kind && kind->type == JSON_STRING ? kind->string : "clip";
		{
			const Json *x = json_get(s, "crossfade");

			if (x && x->type != JSON_NULL &&
				(x->type != JSON_NUMBER || !(x->number >= 0 && x->number <= HC_MAX_CROSSFADE)))
				hc_fail(i + 1, "the manifest's segment %d has a crossfade that is not a number of seconds from 0 to %g",
						i + 1, HC_MAX_CROSSFADE);
			m->segs[i].crossfade = x && x->type == JSON_NUMBER ? x->number : 0;
		}
		if (i == 0 && m->segs[i].crossfade > 0)
			hc_fail(1, "the manifest's first segment has a crossfade: there is nothing before it to fade from");
		m->any_crossfade = m->any_crossfade || m->segs[i].crossfade > 0;
	}

	music = json_get(root, "music");
	if (music && music->type == JSON_OBJECT)
	{
		m->music_file = path_member(music, "file", "music", true);
		m->music_volume = number_member(music, "volume", 0.3, 0, 1);
	}
	else if (music && music->type != JSON_NULL)
		hc_fail(0, "the manifest's \"music\" must be an object or null");
	m->video_volume = number_member(root, "video_volume", 1.0, 0, 1);

	aspect = json_get(root, "aspect_ratio");
	m->aspect_w = 16;
	m->aspect_h = 9;
	if (aspect && aspect->type == JSON_STRING)
	{
		if (strcmp(aspect->string, "9:16") == 0)
			m->aspect_w = 9, m->aspect_h = 16;
		else if (strcmp(aspect->string, "1:1") == 0)
			m->aspect_w = 1, m->aspect_h = 1;
		else if (strcmp(aspect->string, "16:9") != 0)
			hc_fail(0, "the manifest's aspect_ratio \"%s\" is not one of 16:9, 9:16, 1:1",
					aspect->string);
	}
	else if (aspect && aspect->type != JSON_NULL)
		hc_fail(0, "the manifest's aspect_ratio must be a string");

	m->output = path_member(root, "output", "the manifest", true);
	m->thumbnail = path_member(root, "thumbnail", "the manifest", false);
	mode = json_get(root, "mode");
	if (mode && mode->type == JSON_STRING && strcmp(mode->string, "normalize") == 0)
		m->force_normalize = true;
	else if (mode && mode->type != JSON_NULL &&
			 !(mode->type == JSON_STRING && strcmp(mode->string, "auto") == 0))
		hc_fail(0, "the manifest's mode must be \"auto\" or \"normalize\"");
	/* root is kept: the strings above point into it. */
}
