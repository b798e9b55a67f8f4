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

/* An integer member in [lo, hi]; fallback when absent or null (required:
 * an error instead). */
static int
int_member(const json_t *obj, const char *key, const char *where, int segment, int fallback,
		   int lo, int hi, bool required)
{
	const json_t *v = json_object_get(obj, key);

	if (v == NULL || json_is_null(v))
	{
		if (required)
			hc_fail(segment, "the manifest has no \"%s\" in %s", key, where);
		return fallback;
	}
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		hc_fail(segment, "the manifest's \"%s\" in %s must be a whole number from %d to %d, not %s",
				key, where, lo, hi, shown(v));
	return (int) json_integer_value(v);
}

static void
read_segment(Manifest *m, const json_t *s, int i)
{
	char		where[32];
	const char *label;
	const char *kind;
	SegInfo    *seg = &m->segs[i];
	bool		split = m->task == TASK_CHUNK || m->task == TASK_JOIN;
	const json_t *head;

	snprintf(where, sizeof(where), "segment %d", i + 1);
	if (!json_is_object(s))
		hc_fail(i + 1, "the manifest's segment %d must be an object, not %s", i + 1, shown(s));
	/* A chunk lists only its own segments: each says its number. */
	seg->index = m->task == TASK_CHUNK
		? int_member(s, "index", where, i + 1, 0, 1, HC_MAX_SEGMENTS, true) : i + 1;
	if (seg->index != i + 1)
		snprintf(where, sizeof(where), "segment %d", seg->index);
	if (i > 0 && seg->index != m->segs[i - 1].index + 1)
		hc_fail(seg->index, "the manifest's segments must follow each other: segment %d comes after "
				"segment %d", seg->index, m->segs[i - 1].index);
	seg->file = string_member(s, "file", where, seg->index, true);
	label = string_member(s, "label", where, seg->index, false);
	if (label == NULL)
	{
		char	   *fallback = hc_alloc(32);

		snprintf(fallback, 32, "clip %d", seg->index);
		label = fallback;
	}
	seg->label = label;
	kind = string_member(s, "kind", where, seg->index, false);
	if (kind && strcmp(kind, "clip") != 0 && strcmp(kind, "transition") != 0)
		hc_fail(seg->index, "the manifest's \"kind\" in %s must be \"clip\" or \"transition\", not \"%s\"",
				where, kind);
	seg->kind = kind ? kind : "clip";
	seg->crossfade = number_member(s, "crossfade", where, seg->index, 0, 0, HC_MAX_CROSSFADE);
	if (seg->index == 1 && seg->crossfade > 0)
		hc_fail(1, "the manifest's first segment has a crossfade: there is nothing before it to fade from");
	m->any_crossfade = m->any_crossfade || seg->crossfade > 0;
	seg->frames = seg->held = -1;
	if (split)
	{
		/* The fade into it in frames, as the plan gave it. */
		seg->fade_frames = int_member(s, "fade_frames", where, seg->index, 0, 0, 1000, true);
		if (seg->index == 1 && seg->fade_frames > 0)
			hc_fail(1, "the manifest's first segment has a crossfade: there is nothing before it to fade from");
	}
	if (m->task == TASK_JOIN)
	{
		seg->frames = int_member(s, "frames", where, seg->index, 0, 1, 10000000, true);
		seg->held = int_member(s, "held", where, seg->index, 0, 0, seg->frames, true);
	}
	head = json_object_get(s, "head");
	if (head && !json_is_null(head) && !json_is_boolean(head))
		hc_fail(seg->index, "the manifest's \"head\" in %s must be true or false, not %s", where,
				shown(head));
	seg->head = head && json_is_true(head);
	if (seg->head && m->task != TASK_CHUNK)
		hc_fail(seg->index, "the manifest's \"head\" in %s belongs to a chunk's manifest only", where);
}

/* The target of a chunk or a join: {"width", "height", "fps": "N/D"}. */
static void
read_target(Manifest *m, const json_t *root)
{
	const json_t *t = json_object_get(root, "target");
	const char *fps;
	int			num,
				den;
	char		end;

	if (t == NULL || json_is_null(t))
		hc_fail(0, "the manifest of a %s has no \"target\" (the plan's size and frame rate)",
				m->task == TASK_CHUNK ? "chunk" : "join");
	if (!json_is_object(t))
		hc_fail(0, "the manifest's \"target\" must be an object, not %s", shown(t));
	m->target_w = int_member(t, "width", "the target", 0, 0, 16, 8192, true);
	m->target_h = int_member(t, "height", "the target", 0, 0, 16, 8192, true);
	if (m->target_w % 2 || m->target_h % 2)
		hc_fail(0, "the manifest's target size %dx%d must have even sides", m->target_w, m->target_h);
	fps = string_member(t, "fps", "the target", 0, true);
	if (sscanf(fps, "%d/%d%c", &num, &den, &end) != 2 || num <= 0 || den <= 0 ||
		(double) num / den < 1 || (double) num / den > 60)
		hc_fail(0, "the manifest's target \"fps\" must be a frame rate such as \"24/1\" from 1 to 60, "
				"not \"%s\"", fps);
	m->target_fps = av_make_q(num, den);
	m->has_target = true;
}

/* The chunks of a join: [{"file", "first", "last"}], covering every
 * segment in order. */
static void
read_chunks(Manifest *m, const json_t *root)
{
	const json_t *chunks = json_object_get(root, "chunks");
	int			next = 1;

	if (chunks == NULL || !json_is_array(chunks) || json_array_size(chunks) == 0)
		hc_fail(0, "the manifest of a join needs \"chunks\": a non-empty array, not %s",
				chunks ? shown(chunks) : "nothing");
	if (json_array_size(chunks) > (size_t) m->nsegs)
		hc_fail(0, "the manifest has %zu chunks for %d segments", json_array_size(chunks), m->nsegs);
	m->nchunks = (int) json_array_size(chunks);
	m->chunks = hc_alloc(sizeof(ChunkRef) * m->nchunks);
	for (int i = 0; i < m->nchunks; i++)
	{
		const json_t *c = json_array_get(chunks, i);
		char		where[32];
		ChunkRef   *r = &m->chunks[i];

		snprintf(where, sizeof(where), "chunk %d", i + 1);
		if (!json_is_object(c))
			hc_fail(0, "the manifest's chunk %d must be an object, not %s", i + 1, shown(c));
		r->file = string_member(c, "file", where, 0, true);
		r->first = int_member(c, "first", where, 0, 0, 1, m->nsegs, true);
		r->last = int_member(c, "last", where, 0, 0, 1, m->nsegs, true);
		if (r->first != next || r->last < r->first)
			hc_fail(0, "the manifest's chunk %d has segments %d to %d, but must begin at segment %d",
					i + 1, r->first, r->last, next);
		next = r->last + 1;
	}
	if (next != m->nsegs + 1)
		hc_fail(0, "the manifest's chunks end at segment %d of %d", next - 1, m->nsegs);
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
	const char *task;

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

	task = string_member(root, "task", "the manifest", 0, false);
	if (task == NULL || strcmp(task, "compile") == 0)
		m->task = TASK_COMPILE;
	else if (strcmp(task, "plan") == 0)
		m->task = TASK_PLAN;
	else if (strcmp(task, "chunk") == 0)
		m->task = TASK_CHUNK;
	else if (strcmp(task, "join") == 0)
		m->task = TASK_JOIN;
	else
		hc_fail(0, "the manifest's \"task\" must be \"compile\", \"plan\", \"chunk\" or \"join\", not \"%s\"",
				task);

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
	for (int i = 0; i < m->nsegs; i++)
		if (m->segs[i].head && (i != m->nsegs - 1 || i == 0 || m->segs[i].fade_frames == 0))
			hc_fail(m->segs[i].index, "the manifest's segment %d is a \"head\": only the last segment "
					"of a chunk, after another one and fading into it, may be", m->segs[i].index);

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

	m->output = string_member(root, "output", "the manifest", 0, m->task != TASK_PLAN);
	m->thumbnail = string_member(root, "thumbnail", "the manifest", 0, false);
	mode = string_member(root, "mode", "the manifest", 0, false);
	if (mode && strcmp(mode, "normalize") == 0)
		m->force_normalize = true;
	else if (mode && strcmp(mode, "auto") != 0)
		hc_fail(0, "the manifest's \"mode\" must be \"auto\" or \"normalize\", not \"%s\"", mode);
	m->threads = int_member(root, "threads", "the manifest", 0, 0, 0, HC_MAX_THREADS, false);
	if (m->task == TASK_CHUNK || m->task == TASK_JOIN)
		read_target(m, root);
	if (m->task == TASK_JOIN)
		read_chunks(m, root);
	/* root is kept: the strings above point into it. */
}
