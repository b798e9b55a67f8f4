/*
 * normalize.c: decode, filter and re-encode video segments.  The encoder
 * settings are the reference ones (libx264 preset fast, CRF 23).
 */
#include "normalize.h"

#include <math.h>
#include <string.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>

VideoEnc *
venc_create(AVFormatContext *oc, int width, int height, AVRational fps, int max_fade, int threads)
{
	VideoEnc   *ve = hc_alloc(sizeof(VideoEnc));
	const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
	AVCodecContext *enc;
	int			rc;

	if (!codec)
		hc_fail(0, "this FFmpeg build has no libx264 encoder");
	ve->oc = oc;
	ve->width = width;
	ve->height = height;
	ve->fps = fps;
	ve->enc = enc = avcodec_alloc_context3(codec);
	enc->width = width;
	enc->height = height;
	enc->pix_fmt = AV_PIX_FMT_YUV420P;
	enc->sample_aspect_ratio = (AVRational) {1, 1};
	enc->time_base = av_inv_q(fps);
	enc->framerate = fps;
	enc->thread_count = threads;
	ve->threads = threads;
	enc->color_primaries = AVCOL_PRI_BT709;
	enc->color_trc = AVCOL_TRC_BT709;
	enc->colorspace = AVCOL_SPC_BT709;
	enc->color_range = AVCOL_RANGE_MPEG;
	if (oc->oformat->flags & AVFMT_GLOBALHEADER)
		enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
	av_opt_set(enc->priv_data, "preset", "fast", 0);
	av_opt_set(enc->priv_data, "crf", "23", 0);
	if ((rc = avcodec_open2(enc, codec, NULL)) < 0)
		hc_fail(0, "the H.264 encoder cannot be opened: %s", hc_err(rc));
	ve->st = avformat_new_stream(oc, NULL);
	if (!ve->st)
		hc_fail(0, "out of memory");
	avcodec_parameters_from_context(ve->st->codecpar, enc);
	ve->st->time_base = enc->time_base;
	ve->st->avg_frame_rate = fps;
	ve->pkt = av_packet_alloc();
	ve->capacity = max_fade + 1;
	ve->queue = hc_alloc(sizeof(AVFrame *) * ve->capacity);
	ve->fading = hc_alloc(sizeof(AVFrame *) * ve->capacity);
	return ve;
}

static void encode_frame(VideoEnc *ve, AVFrame *f, int segment);

static void
venc_write(VideoEnc *ve)
{
	int			rc;

	while ((rc = avcodec_receive_packet(ve->enc, ve->pkt)) >= 0)
	{
		av_packet_rescale_ts(ve->pkt, ve->enc->time_base, ve->st->time_base);
		ve->pkt->stream_index = ve->st->index;
		if ((rc = av_interleaved_write_frame(ve->oc, ve->pkt)) < 0)
			hc_fail(0, "writing the video failed: %s", hc_err(rc));
	}
	if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF)
		hc_fail(0, "the H.264 encoder failed: %s", hc_err(rc));
}

void
venc_finish(VideoEnc *ve)
{
	/* Held back for a fade with no segment after it: shown as they are. */
	for (int i = 0; i < ve->nqueue; i++)
	{
		encode_frame(ve, ve->queue[i], 0);
		av_frame_free(&ve->queue[i]);
	}
	ve->nqueue = 0;
	avcodec_send_frame(ve->enc, NULL);
	venc_write(ve);
}

void
segvideo_open(SegVideo *sv, VideoEnc *ve, AVStream *st, double duration, int hold, int skip,
			  int limit, int segment, const char *what)
{
	char		args[512];
	char		chain[1024];
	AVFilterInOut *outputs,
			   *inputs;
	AVRational	sar = st->codecpar->sample_aspect_ratio;
	AVRational	fr = hc_stream_fps(st);
	int			rc;

	memset(sv, 0, sizeof(*sv));
	sv->ve = ve;
	sv->segment = segment;
	sv->end_pts = INT64_MIN;
	snprintf(sv->what, sizeof(sv->what), "%s", what);
	sv->max_frames = llround(duration * av_q2d(ve->fps));
	if (limit > 0)
		sv->max_frames = FFMIN(sv->max_frames, limit);
	sv->skip = skip;
	/* What the previous segment held back now fades into this one. */
	sv->hold = FFMIN(hold, ve->capacity - 1);
	for (int i = 0; i < ve->nqueue; i++)
		ve->fading[i] = ve->queue[i];
	ve->nfading = ve->nqueue;
	ve->nqueue = 0;
	sv->dec = hc_open_decoder(st, segment, what, ve->threads);
	sv->frame = av_frame_alloc();
	sv->filtered = av_frame_alloc();
	sv->graph = avfilter_graph_alloc();
	if (!sv->graph || !sv->frame || !sv->filtered)
		hc_fail(segment, "out of memory");
	sv->graph->nb_threads = ve->threads;
	if (sar.num <= 0 || sar.den <= 0)
		sar = (AVRational) {1, 1};
	snprintf(args, sizeof(args),
			 "video_size=%dx%d:pix_fmt=%d:time_base=%d/%d:pixel_aspect=%d/%d:frame_rate=%d/%d",
			 sv->dec->width, sv->dec->height, sv->dec->pix_fmt, st->time_base.num,
			 st->time_base.den, sar.num, sar.den, fr.num, fr.den);
	if ((rc = avfilter_graph_create_filter(&sv->src, avfilter_get_by_name("buffer"), "in",
										   args, NULL, sv->graph)) < 0 ||
		(rc = avfilter_graph_create_filter(&sv->sink, avfilter_get_by_name("buffersink"), "out",
										   NULL, NULL, sv->graph)) < 0)
		hc_fail(segment, "%s: the video filters cannot be set up: %s", what, hc_err(rc));
	/* Square pixels first, then the common rate, then fit inside the
	 * target and pad the rest (pillar- or letterbox). */
	snprintf(chain, sizeof(chain),
			 "%sfps=%d/%d,scale=%d:%d:force_original_aspect_ratio=decrease:flags=bicubic,"
			 "pad=%d:%d:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p",
			 av_cmp_q(sar, (AVRational) {1, 1}) != 0 ? "scale=trunc(iw*sar/2)*2:ih,setsar=1," : "",
			 ve->fps.num, ve->fps.den, ve->width, ve->height, ve->width, ve->height);
	outputs = avfilter_inout_alloc();
	inputs = avfilter_inout_alloc();
	outputs->name = av_strdup("in");
	outputs->filter_ctx = sv->src;
	inputs->name = av_strdup("out");
	inputs->filter_ctx = sv->sink;
	if ((rc = avfilter_graph_parse_ptr(sv->graph, chain, &inputs, &outputs, NULL)) < 0 ||
		(rc = avfilter_graph_config(sv->graph, NULL)) < 0)
		hc_fail(segment, "%s: the video filters cannot be set up: %s", what, hc_err(rc));
	avfilter_inout_free(&inputs);
	avfilter_inout_free(&outputs);
}

static void
encode_frame(VideoEnc *ve, AVFrame *f, int segment)
{
	int			rc;

	f->pts = ve->frames++;
	f->pict_type = AV_PICTURE_TYPE_NONE;
	if ((rc = avcodec_send_frame(ve->enc, f)) < 0)
		hc_fail(segment, "the H.264 encoder failed: %s", hc_err(rc));
	venc_write(ve);
}

/*
 * dst = from * (1 - a) + dst * a, on every plane of two yuv420p frames of
 * the same size; a = (k + 1) / (n + 1) for the k-th of n blended frames, so
 * the fade starts just after the previous segment and ends just before the
 * next one stands alone.
 */
static void
blend(AVFrame *dst, const AVFrame *from, int k, int n)
{
	int			a = (int) lround(256.0 * (k + 1) / (n + 1));

	for (int p = 0; p < 3; p++)
	{
		int			w = p ? (dst->width + 1) / 2 : dst->width;
		int			h = p ? (dst->height + 1) / 2 : dst->height;

		for (int y = 0; y < h; y++)
		{
			uint8_t    *d = dst->data[p] + (ptrdiff_t) y * dst->linesize[p];
			const uint8_t *s = from->data[p] + (ptrdiff_t) y * from->linesize[p];

			for (int x = 0; x < w; x++)
				d[x] = (uint8_t) ((d[x] * a + s[x] * (256 - a) + 128) >> 8);
		}
	}
}

/* One normalized frame of the segment: blended with a held frame of the
 * previous segment while its fade lasts, held back itself when it may be
 * one of the last `hold`, else encoded. */
static void
take_frame(SegVideo *sv, AVFrame *f)
{
	VideoEnc   *ve = sv->ve;
	int			rc;

	if (sv->fade_pos < ve->nfading)
	{
		if ((rc = av_frame_make_writable(f)) < 0)
			hc_fail(sv->segment, "%s: the crossfade failed: %s", sv->what, hc_err(rc));
		blend(f, ve->fading[sv->fade_pos], sv->fade_pos, ve->nfading);
		av_frame_free(&ve->fading[sv->fade_pos]);
		sv->fade_pos++;
	}
	if (sv->hold == 0)
	{
		encode_frame(ve, f, sv->segment);
		return;
	}
	if (!(ve->queue[ve->nqueue++] = av_frame_clone(f)))
		hc_fail(sv->segment, "out of memory");
	if (ve->nqueue > sv->hold)
	{
		AVFrame    *oldest = ve->queue[0];

		memmove(ve->queue, ve->queue + 1, sizeof(AVFrame *) * --ve->nqueue);
		encode_frame(ve, oldest, sv->segment);
		av_frame_free(&oldest);
	}
}

static void
drain_filter(SegVideo *sv)
{
	int			rc;

	while ((rc = av_buffersink_get_frame(sv->sink, sv->filtered)) >= 0)
	{
		if (sv->frames < sv->max_frames)
		{
			/* Frames a chunk before this one blended are only counted. */
			if (++sv->frames > sv->skip)
				take_frame(sv, sv->filtered);
		}
		av_frame_unref(sv->filtered);
	}
	if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF)
		hc_fail(sv->segment, "%s: filtering its video failed: %s", sv->what, hc_err(rc));
}

static void
receive_frames(SegVideo *sv)
{
	int			rc;

	while ((rc = avcodec_receive_frame(sv->dec, sv->frame)) >= 0)
	{
		sv->frame->pts = sv->frame->best_effort_timestamp;
		if (sv->frame->pts != AV_NOPTS_VALUE)
			sv->end_pts = FFMAX(sv->end_pts, sv->frame->pts + FFMAX(sv->frame->pkt_duration, 0));
		if ((rc = av_buffersrc_add_frame_flags(sv->src, sv->frame, 0)) < 0)
			hc_fail(sv->segment, "%s: filtering its video failed: %s", sv->what, hc_err(rc));
		drain_filter(sv);
	}
	if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF)
		hc_fail(sv->segment, "%s: its video cannot be decoded: %s", sv->what, hc_err(rc));
}

void
segvideo_packet(SegVideo *sv, AVPacket *pkt)
{
	int			rc = avcodec_send_packet(sv->dec, pkt);

	if (rc < 0 && rc != AVERROR(EAGAIN))
		hc_fail(sv->segment, "%s: its video cannot be decoded: %s", sv->what, hc_err(rc));
	receive_frames(sv);
}

void
segvideo_flush(SegVideo *sv)
{
	int			rc;

	avcodec_send_packet(sv->dec, NULL);
	receive_frames(sv);
	/* The end of the last frame, not its start, ends the segment: the fps
	 * filter fills the frame rate up to there. */
	if ((rc = av_buffersrc_close(sv->src, sv->end_pts, AV_BUFFERSRC_FLAG_PUSH)) < 0)
		hc_fail(sv->segment, "%s: filtering its video failed: %s", sv->what, hc_err(rc));
	drain_filter(sv);
}

bool
segvideo_full(const SegVideo *sv)
{
	return sv->frames >= sv->max_frames;
}

void
segvideo_close(SegVideo *sv)
{
	/* A segment shorter than the fade into it (it fails as truncated). */
	for (int i = sv->fade_pos; i < sv->ve->nfading; i++)
		av_frame_free(&sv->ve->fading[i]);
	sv->ve->nfading = 0;
	avfilter_graph_free(&sv->graph);
	avcodec_free_context(&sv->dec);
	av_frame_free(&sv->frame);
	av_frame_free(&sv->filtered);
}
