/*
 * compile.c: `hagen-compile compile MANIFEST` — joins the segments into the
 * final MP4 (index at the front), writes its thumbnail and reports; or,
 * as the manifest's "task" says, plans a re-encode split into chunks, or
 * runs one of its chunks (chunk.c) or its join (join.c).
 *
 * Modes, chosen from the probe of every segment:
 *   copy        identical video parameters, nothing to mix: packets copied
 *               (the audio too when a single segment is passed through)
 *   copy_video  identical video parameters: video packets copied with each
 *               segment's timestamps offset by the video end of the ones
 *               before; audio decoded, placed, mixed and encoded (audio.c)
 *   normalize   anything differs, or a segment asks for a crossfade: every
 *               segment re-encoded to the target size and frame rate
 *               (normalize.c, which also blends the fades), audio as above
 * Segments are read one after another, so memory does not grow with their
 * number.
 */
#include "compile.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libavutil/opt.h>

const char *const hc_mode_names[] = {"copy", "copy_video", "normalize"};

static bool
same_video(const SegInfo *a, const SegInfo *b)
{
	const AVCodecParameters *x = a->vpar,
			   *y = b->vpar;
	AVRational	sx = x->sample_aspect_ratio.num > 0 ? x->sample_aspect_ratio : (AVRational) {1, 1};
	AVRational	sy = y->sample_aspect_ratio.num > 0 ? y->sample_aspect_ratio : (AVRational) {1, 1};

	return x->codec_id == y->codec_id && x->width == y->width && x->height == y->height &&
		x->format == y->format && x->profile == y->profile && x->level == y->level &&
		av_cmp_q(sx, sy) == 0 && av_cmp_q(a->fps, b->fps) == 0 &&
		x->field_order == y->field_order && x->color_range == y->color_range &&
		x->color_primaries == y->color_primaries && x->color_trc == y->color_trc &&
		x->color_space == y->color_space && x->extradata_size == y->extradata_size &&
		(x->extradata_size == 0 || memcmp(x->extradata, y->extradata, x->extradata_size) == 0);
}

static bool
fits_aspect(const Manifest *m, const SegInfo *s)
{
	AVRational	sar = s->vpar->sample_aspect_ratio.num > 0 ? s->vpar->sample_aspect_ratio
		: (AVRational) {1, 1};
	double		shown = (double) s->vpar->width * av_q2d(sar) / s->vpar->height;
	double		want = (double) m->aspect_w / m->aspect_h;

	return fabs(shown - want) / want < 0.02;
}

void
compile_choose_mode(Compile *c)
{
	Manifest   *m = &c->m;
	bool		same = !m->force_normalize && !m->any_crossfade;
	bool		any_audio = false;

	for (int i = 0; i < m->nsegs; i++)
	{
		same = same && same_video(&m->segs[0], &m->segs[i]);
		any_audio = any_audio || m->segs[i].apar != NULL;
	}
	same = same && (m->segs[0].vpar->codec_id == AV_CODEC_ID_H264 ||
					m->segs[0].vpar->codec_id == AV_CODEC_ID_HEVC) &&
		fits_aspect(m, &m->segs[0]);
	if (!same)
		c->mode = MODE_NORMALIZE;
	else if (!any_audio && !m->music_file)
		c->mode = MODE_COPY;
	else if (m->nsegs == 1 && !m->music_file && m->video_volume == 1.0 &&
			 m->segs[0].apar->codec_id == AV_CODEC_ID_AAC)
	{
		c->mode = MODE_COPY;
		c->copy_audio = true;
	}
	else
		c->mode = MODE_COPY_VIDEO;
}

/* The size of a normalized output: the target aspect ratio, its short side
 * the largest short side among the segments (even, at most 1080). */
static void
normalized_size(const Manifest *m, int *w, int *h)
{
	int			shortest = 0;

	for (int i = 0; i < m->nsegs; i++)
	{
		int			s = FFMIN(m->segs[i].vpar->width, m->segs[i].vpar->height);

		shortest = FFMAX(shortest, s);
	}
	shortest = FFMIN(shortest, 1080) & ~1;
	if (shortest < 16)
		shortest = 16;
	if (m->aspect_w >= m->aspect_h)
	{
		*h = shortest;
		*w = (int) lround((double) shortest * m->aspect_w / m->aspect_h) & ~1;
	}
	else
	{
		*w = shortest;
		*h = (int) lround((double) shortest * m->aspect_h / m->aspect_w) & ~1;
	}
}

/* The frame rate of a normalized output: the most common one, at most 60. */
static AVRational
normalized_fps(const Manifest *m)
{
	AVRational	best = m->segs[0].fps;
	int			best_n = 0;

	for (int i = 0; i < m->nsegs; i++)
	{
		int			n = 0;

		for (int j = 0; j < m->nsegs; j++)
			n += av_cmp_q(m->segs[i].fps, m->segs[j].fps) == 0;
		if (n > best_n)
			best = m->segs[i].fps, best_n = n;
	}
	if (av_q2d(best) > 60 || av_q2d(best) < 1)
		best = (AVRational) {24, 1};
	return best;
}

/* Creates the output (its streams are added next), removed should the
 * compile fail. */
static void
create_output(Compile *c)
{
	int			rc;

	hc_remove_on_failure(c->m.output);
	if ((rc = avformat_alloc_output_context2(&c->oc, NULL, "mp4", c->m.output)) < 0)
		hc_fail(0, "the output cannot be created: %s", hc_err(rc));
}

static void
add_streams(Compile *c)
{
	Manifest   *m = &c->m;
	bool		any_audio = false;

	for (int i = 0; i < m->nsegs; i++)
		any_audio = any_audio || m->segs[i].apar != NULL;
	if (c->mode == MODE_NORMALIZE)
		c->ve = venc_create(c->oc, c->width, c->height, c->fps, c->max_fade, m->threads);
	else
	{
		c->vst = avformat_new_stream(c->oc, NULL);
		avcodec_parameters_copy(c->vst->codecpar, m->segs[0].vpar);
		c->vst->codecpar->codec_tag = 0;
		c->vst->time_base = m->segs[0].vtb;
		c->vst->avg_frame_rate = m->segs[0].fps;
	}
	if (c->copy_audio)
	{
		c->ast_copy = avformat_new_stream(c->oc, NULL);
		avcodec_parameters_copy(c->ast_copy->codecpar, m->segs[0].apar);
		c->ast_copy->codecpar->codec_tag = 0;
	}
	else if (c->mode != MODE_COPY && (any_audio || m->music_file))
		c->ao = audio_out_create(c->oc, m->music_file, m->music_volume, m->video_volume,
								 c->total_estimate);
}

void
compile_open_output(Compile *c)
{
	Manifest   *m = &c->m;
	AVDictionary *opts = NULL;
	int			rc;

	if ((rc = avio_open(&c->oc->pb, m->output, AVIO_FLAG_WRITE)) < 0)
		hc_fail(0, "the output %s cannot be written: %s", m->output, hc_err(rc));
	/*
	 * The index at the front: the video plays while it downloads.  Room for
	 * it is reserved before the media (a generous estimate: 40 bytes per
	 * sample), so the index is written in place at the end, instead of
	 * +faststart rewriting the whole file a second time.  Should it not fit,
	 * the compile is run again with +faststart.
	 */
	if (c->faststart)
		av_dict_set(&opts, "movflags", "+faststart", 0);
	else
	{
		double		fps = c->mode == MODE_NORMALIZE ? av_q2d(c->fps) : av_q2d(m->segs[0].fps);
		double		samples = c->total_estimate * (fps + (double) HC_RATE / 1024 + 2) + 64;

		av_dict_set_int(&opts, "moov_size", (int64_t) (16384 + samples * 40), 0);
	}
	if ((rc = avformat_write_header(c->oc, &opts)) < 0)
		hc_fail(0, "the output header cannot be written: %s", hc_err(rc));
	av_dict_free(&opts);
}

void
compile_progress(Compile *c, int seg, double within)
{
	double		p = (seg + fmin(fmax(within, 0), 1)) / c->m.nsegs * 0.95;

	if (p - c->last_progress < 0.01 && within > 0)
		return;
	c->last_progress = p;
	hc_emit(json_pack("{s:f,s:i}", "progress", p, "segment", c->m.segs[seg].index));
}

/*
 * The target of a re-encode: the manifest's (a chunk or a join: the plan's),
 * else the size and frame rate the segments call for.  Then the crossfades:
 * each as many whole frames as asked, but at most half of either segment,
 * so that a segment's fade in and fade out never overlap (a chunk or a join
 * takes them from the manifest, as the plan gave them).  The output is
 * shorter by every fade.
 */
void
compile_plan(Compile *c)
{
	Manifest   *m = &c->m;
	double		fps;

	if (m->has_target)
	{
		c->width = m->target_w;
		c->height = m->target_h;
		c->fps = m->target_fps;
	}
	else
	{
		normalized_size(m, &c->width, &c->height);
		c->fps = normalized_fps(m);
	}
	fps = av_q2d(c->fps);
	for (int i = 1; i < m->nsegs; i++)
	{
		SegInfo    *s = &m->segs[i];

		if (m->task == TASK_COMPILE || m->task == TASK_PLAN)
		{
			int64_t		want = llround(s->crossfade * fps);
			int64_t		prev = (int64_t) floor(m->segs[i - 1].vdur * fps) / 2;
			int64_t		self = (int64_t) floor(s->vdur * fps) / 2;

			s->fade_frames = (int) FFMAX(0, FFMIN(want, FFMIN(prev, self)));
		}
		c->max_fade = FFMAX(c->max_fade, s->fade_frames);
		if (!s->head)
			c->total_estimate -= s->fade_frames / fps;
	}
}

static int64_t
frames_to_samples(Compile *c, int64_t frames)
{
	return av_rescale_q(frames, av_inv_q(c->fps), (AVRational) {1, HC_RATE});
}

/* Output video time so far in audio samples, for the mix's bounds. */
static int64_t
video_end_samples(Compile *c, int64_t seg_end)
{
	if (c->mode == MODE_NORMALIZE)
		return frames_to_samples(c, c->ve->frames);
	return av_rescale_q(c->offset + seg_end, c->vst->time_base, (AVRational) {1, HC_RATE});
}

static void
copy_video_packet(Compile *c, SegInfo *s, AVStream *in, AVPacket *pkt, int64_t start,
				  int64_t *seg_end, int64_t *shift, bool first)
{
	AVRational	otb = c->vst->time_base;
	int64_t		dur;
	int			rc;

	if (pkt->pts == AV_NOPTS_VALUE)
		hc_fail(s->index, "segment %d (%s) has video packets without timestamps", s->index,
				s->label);
	if (pkt->dts == AV_NOPTS_VALUE)
		pkt->dts = pkt->pts;
	dur = pkt->duration > 0 ? av_rescale_q(pkt->duration, in->time_base, otb)
		: av_rescale_q(1, av_inv_q(s->fps), otb);
	pkt->pts = av_rescale_q(pkt->pts - start, in->time_base, otb) + c->offset;
	pkt->dts = av_rescale_q(pkt->dts - start, in->time_base, otb) + c->offset;
	if (first && c->last_dts != AV_NOPTS_VALUE && pkt->dts + *shift <= c->last_dts)
		*shift = c->last_dts - pkt->dts + 1;
	pkt->pts += *shift;
	pkt->dts += *shift;
	if (pkt->dts <= c->last_dts && c->last_dts != AV_NOPTS_VALUE)
		pkt->dts = c->last_dts + 1;
	if (pkt->pts < pkt->dts)
		pkt->pts = pkt->dts;
	c->last_dts = pkt->dts;
	pkt->duration = dur;
	*seg_end = FFMAX(*seg_end, pkt->pts + dur - c->offset);
	pkt->stream_index = c->vst->index;
	pkt->pos = -1;
	if ((rc = av_interleaved_write_frame(c->oc, pkt)) < 0)
		hc_fail(s->index, "writing segment %d (%s) failed: %s", s->index, s->label, hc_err(rc));
}

static void
copy_audio_packet(Compile *c, AVStream *in, AVPacket *pkt)
{
	int			rc;

	av_packet_rescale_ts(pkt, in->time_base, c->ast_copy->time_base);
	pkt->stream_index = c->ast_copy->index;
	pkt->pos = -1;
	if ((rc = av_interleaved_write_frame(c->oc, pkt)) < 0)
		hc_fail(1, "writing the audio failed: %s", hc_err(rc));
}

static void
run_segment(Compile *c, int i)
{
	SegInfo    *s = &c->m.segs[i];
	char		what[300];
	AVFormatContext *ic;
	AVStream   *vin,
			   *ain = NULL;
	AVPacket   *pkt = av_packet_alloc();
	ClipAudio	ca;
	SegVideo	sv;
	int64_t		start,
				seg_end = 0,
				shift = 0,
				audio_start = c->ao ? c->ao->emitted : 0,
				npackets = 0;
	double		seconds,
				start_s;
	int			v,
				a,
				rc;

	snprintf(what, sizeof(what), "segment %d (%s)", s->index, s->label);
	ic = hc_open_input(s->file, HC_VIDEO_FORMATS, s->index, what);
	v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);
	a = s->apar ? hc_stream(ic, AVMEDIA_TYPE_AUDIO) : -1;
	if (v < 0)
		hc_fail(s->index, "%s has no video stream", what);
	vin = ic->streams[v];
	ain = a >= 0 ? ic->streams[a] : NULL;
	start = vin->start_time != AV_NOPTS_VALUE ? vin->start_time : 0;
	start_s = start * av_q2d(vin->time_base);
	c->starts[i] = c->mode == MODE_NORMALIZE ? c->ve->frames / av_q2d(c->ve->fps)
		: c->offset * av_q2d(c->vst->time_base);
	if (c->ao)
		clip_audio_open(&ca, ain, start_s, s->index, what);
	if (c->mode == MODE_NORMALIZE)
		segvideo_open(&sv, c->ve, vin, s->vdur,
					  i + 1 < c->m.nsegs ? c->m.segs[i + 1].fade_frames : 0, 0, 0, s->index, what);
	compile_progress(c, i, 0);

	while ((rc = av_read_frame(ic, pkt)) >= 0)
	{
		if (pkt->flags & AV_PKT_FLAG_CORRUPT)
			hc_fail(s->index, "%s is damaged: a packet at %.2f s is corrupt", what,
					pkt->pts != AV_NOPTS_VALUE ? pkt->pts * av_q2d(ic->streams[pkt->stream_index]->time_base) : 0);
		if (pkt->stream_index == v)
		{
			if (c->mode == MODE_NORMALIZE)
				segvideo_packet(&sv, pkt);
			else
				copy_video_packet(c, s, vin, pkt, start, &seg_end, &shift, npackets == 0);
			npackets++;
			seconds = c->mode == MODE_NORMALIZE ? sv.frames / av_q2d(c->ve->fps)
				: seg_end * av_q2d(c->vst->time_base);
			compile_progress(c, i, seconds / s->vdur);
		}
		else if (ain && pkt->stream_index == a)
		{
			if (c->copy_audio)
				copy_audio_packet(c, ain, pkt);
			else if (c->ao)
				clip_audio_packet(&ca, pkt);
		}
		av_packet_unref(pkt);
		if (c->ao)
		{
			int64_t		allowed = video_end_samples(c, seg_end) - audio_start - ca.emitted;

			if (allowed > 0)
				audio_mix(c->ao, &ca, allowed, false);
		}
	}
	if (rc != AVERROR_EOF)
		hc_fail(s->index, "%s is damaged: reading it failed: %s", what, hc_err(rc));
	if (c->mode == MODE_NORMALIZE)
	{
		segvideo_flush(&sv);
		seconds = sv.frames / av_q2d(c->ve->fps);
		npackets = sv.frames;
		segvideo_close(&sv);
	}
	else
	{
		seconds = seg_end * av_q2d(c->vst->time_base);
		c->offset += seg_end + shift;
	}
	if (npackets == 0)
		hc_fail(s->index, "%s has no video frames", what);
	/* A file cut short still demuxes to its end without an error. */
	if (seconds < s->vdur * 0.9 - 0.1)
		hc_fail(s->index, "%s is truncated: its video stops at %.2f s of %.2f s", what, seconds,
				s->vdur);
	if (c->ao)
	{
		clip_audio_flush(&ca);
		audio_mix(c->ao, &ca, video_end_samples(c, 0) - audio_start - ca.emitted, true);
		/* The audio under the frames held back fades into the next segment. */
		if (c->mode == MODE_NORMALIZE && c->ve->nqueue > 0)
			audio_hold_tail(c->ao, &ca, frames_to_samples(c, c->ve->frames + c->ve->nqueue) -
							frames_to_samples(c, c->ve->frames));
		clip_audio_close(&ca);
	}
	c->durations[i] = seconds;
	av_packet_free(&pkt);
	avformat_close_input(&ic);
}

static json_t *
stream_json(AVStream *st)
{
	AVCodecParameters *p = st->codecpar;
	double		dur = st->duration > 0 ? st->duration * av_q2d(st->time_base) : 0;
	json_t	   *s = json_pack("{s:s,s:f}", "codec", avcodec_get_name(p->codec_id), "duration", dur);

	if (p->codec_type == AVMEDIA_TYPE_VIDEO)
		json_object_update_new(s, json_pack("{s:i,s:i,s:f,s:I}", "width", p->width, "height", p->height,
											"fps", av_q2d(hc_stream_fps(st)),
											"frames", (json_int_t) st->nb_frames));
	else
		json_object_update_new(s, json_pack("{s:i,s:i}", "sample_rate", p->sample_rate,
											"channels", p->ch_layout.nb_channels));
	return s;
}

/* Reads the finished file back and prints the result line, with extra's
 * members added. */
static void
report(Compile *c, json_t *extra)
{
	AVFormatContext *ic = hc_open_input(c->m.output, HC_VIDEO_FORMATS, 0, "the compiled video");
	int			v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);
	int			a = hc_stream(ic, AVMEDIA_TYPE_AUDIO);
	struct stat sb;
	double		duration;
	json_t	   *r;

	if (v < 0)
		hc_fail(0, "the compiled video has no video stream");
	duration = ic->streams[v]->duration * av_q2d(ic->streams[v]->time_base);
	stat(c->m.output, &sb);
	r = json_pack("{s:f,s:I,s:s,s:i,s:i,s:o,s:o,s:[]}", "duration", duration,
				  "size", (json_int_t) sb.st_size, "mode", hc_mode_names[c->mode],
				  "width", ic->streams[v]->codecpar->width, "height", ic->streams[v]->codecpar->height,
				  "video", stream_json(ic->streams[v]),
				  "audio", a >= 0 ? stream_json(ic->streams[a]) : json_null(), "segments");
	for (int i = 0; i < c->m.nsegs; i++)
		json_array_append_new(json_object_get(r, "segments"),
							  json_pack("{s:s,s:s,s:f,s:f,s:f}", "label", c->m.segs[i].label,
										"kind", c->m.segs[i].kind, "start", c->starts[i],
										"duration", c->durations[i],
										"crossfade", c->mode == MODE_NORMALIZE
										? c->m.segs[i].fade_frames / av_q2d(c->fps) : 0.0));
	if (c->m.thumbnail)
	{
		struct stat tb;

		json_object_set_new(r, "thumbnail", hc_json_text(c->m.thumbnail));
		json_object_set_new(r, "thumbnail_size",
							stat(c->m.thumbnail, &tb) == 0 ? json_integer(tb.st_size) : json_null());
	}
	if (extra)
		json_object_update_new(r, extra);
	avformat_close_input(&ic);
	json_object_set_new(r, "cpu_seconds", json_real(hc_cpu_seconds()));
	hc_emit(json_pack("{s:o}", "result", r));
}

void
compile_finish(Compile *c, json_t *extra)
{
	int			rc;

	if ((rc = av_write_trailer(c->oc)) < 0 && !c->faststart)
	{
		/* The index did not fit the reserved room: once more, the slow way. */
		char	   *again[] = {"hagen-compile", "compile", (char *) c->manifest_path, "--faststart", NULL};

		avio_closep(&c->oc->pb);
		unlink(c->m.output);
		fflush(stdout);
		execv("/proc/self/exe", again);
		hc_fail(0, "the output cannot be finished: %s", hc_err(rc));
	}
	if (rc < 0)
		hc_fail(0, "the output cannot be finished: %s", hc_err(rc));
	avio_closep(&c->oc->pb);
	hc_emit(json_pack("{s:f,s:s}", "progress", 0.97, "step", "thumbnail"));
	if (c->m.thumbnail)
	{
		double		total = 0,
					t;
		int			w,
					h;
		const char *err;

		for (int i = 0; i < c->m.nsegs; i++)
			total += c->durations[i];
		hc_remove_on_failure(c->m.thumbnail);
		/* The keyframe at or before one second in: the opening shot, from
		 * one decoded frame. */
		if ((err = hc_frame_to_jpeg(c->m.output, fmin(1.0, total / 2), true, c->m.thumbnail,
									&t, &w, &h)))
			hc_fail(0, "the thumbnail cannot be made: %s", err);
	}
	report(c, extra);
	hc_keep_files();
}

void
compile_begin(Compile *c, const char *manifest_path, bool faststart)
{
	memset(c, 0, sizeof(*c));
	c->manifest_path = manifest_path;
	c->faststart = faststart;
	manifest_read(manifest_path, &c->m);
	for (int i = 0; i < c->m.nsegs; i++)
	{
		hc_probe_segment(&c->m.segs[i]);
		if (!c->m.segs[i].head)
			c->total_estimate += c->m.segs[i].vdur;
	}
	c->starts = hc_alloc(sizeof(double) * c->m.nsegs);
	c->durations = hc_alloc(sizeof(double) * c->m.nsegs);
	c->last_dts = AV_NOPTS_VALUE;
	c->last_progress = -1;
}

/* A plan: the mode, and for a re-encode its target and every fade in
 * frames, from which SQL splits the work into chunks. */
static int
plan_main(Compile *c)
{
	json_t	   *r,
			   *segs = json_array();

	compile_choose_mode(c);
	if (c->mode == MODE_NORMALIZE)
		compile_plan(c);
	for (int i = 0; i < c->m.nsegs; i++)
	{
		SegInfo    *s = &c->m.segs[i];
		json_t	   *j = json_pack("{s:i,s:s,s:f}", "index", s->index, "label", s->label,
								  "duration", s->vdur);

		if (c->mode == MODE_NORMALIZE)
			json_object_update_new(j, json_pack("{s:I,s:i}",
												"frames", (json_int_t) llround(s->vdur * av_q2d(c->fps)),
												"fade_frames", s->fade_frames));
		json_array_append_new(segs, j);
	}
	r = json_pack("{s:s,s:s,s:f,s:o,s:f}", "task", "plan", "mode", hc_mode_names[c->mode],
				  "duration", c->total_estimate, "segments", segs, "cpu_seconds", hc_cpu_seconds());
	if (c->mode == MODE_NORMALIZE)
	{
		char		fps[32];

		snprintf(fps, sizeof(fps), "%d/%d", c->fps.num, c->fps.den);
		json_object_update_new(r, json_pack("{s:i,s:i,s:s,s:i}", "width", c->width, "height", c->height,
											"fps", fps, "max_fade_frames", c->max_fade));
	}
	hc_emit(json_pack("{s:o}", "result", r));
	return 0;
}

int
hc_compile_main(int argc, char **argv)
{
	Compile		c;

	if (argc != 1 && !(argc == 2 && strcmp(argv[1], "--faststart") == 0))
		hc_fail(0, "usage: hagen-compile compile MANIFEST.json");
	{
		/* A manifest may ask for a photo fitted instead (image.c). */
		json_t	   *root = json_load_file(argv[0], 0, NULL);

		if (root && json_is_object(root) && json_object_get(root, "image"))
			return hc_image_manifest(root);
		json_decref(root);
	}
	compile_begin(&c, argv[0], argc == 2);
	switch (c.m.task)
	{
		case TASK_PLAN:
			return plan_main(&c);
		case TASK_CHUNK:
			return hc_chunk(&c);
		case TASK_JOIN:
			return hc_join(&c);
		case TASK_COMPILE:
			break;
	}
	compile_choose_mode(&c);
	if (c.mode == MODE_NORMALIZE)
		compile_plan(&c);
	create_output(&c);
	add_streams(&c);
	compile_open_output(&c);
	for (int i = 0; i < c.m.nsegs; i++)
		run_segment(&c, i);
	if (c.ve)
		venc_finish(c.ve);
	if (c.ao)
		audio_out_finish(c.ao);
	compile_finish(&c, NULL);
	return 0;
}
