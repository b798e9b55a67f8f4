/*
 * media.c: opening inputs safely and reading what they hold.
 *
 * Inputs are local files only (protocol whitelist "file") in the formats
 * we expect (format whitelist): a "video" that is really a playlist cannot
 * make the demuxers open other files or URLs.
 */
#include "hc.h"

#include <string.h>

#include <libavutil/opt.h>

AVFormatContext *
hc_open_input(const char *path, const char *formats, int segment, const char *what)
{
	AVFormatContext *ic = avformat_alloc_context();
	AVDictionary *opts = NULL;
	const char *name;
	int			rc;

	if (!ic)
		hc_fail(segment, "out of memory");
	ic->protocol_whitelist = av_strdup("file");
	ic->format_whitelist = av_strdup(formats);
	av_dict_set(&opts, "protocol_whitelist", "file", 0);
	rc = avformat_open_input(&ic, path, NULL, &opts);
	av_dict_free(&opts);
	/* The file's name, not its directory: messages end up in job errors. */
	name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if (rc < 0)
		hc_fail(segment, "%s cannot be read (%s): %s", what, name,
				rc == AVERROR_INVALIDDATA ? "not a supported media file or damaged" : hc_err(rc));
	if ((rc = avformat_find_stream_info(ic, NULL)) < 0)
		hc_fail(segment, "%s cannot be read (%s): %s", what, name, hc_err(rc));
	return ic;
}

int
hc_stream(AVFormatContext *ic, enum AVMediaType type)
{
	int			idx = av_find_best_stream(ic, type, -1, -1, NULL, 0);

	if (idx < 0)
		return -1;
	/* A cover picture is not a video stream. */
	if (ic->streams[idx]->disposition & AV_DISPOSITION_ATTACHED_PIC)
		return -1;
	return idx;
}

AVRational
hc_stream_fps(AVStream *st)
{
	AVRational	r = st->avg_frame_rate;

	if (r.num <= 0 || r.den <= 0)
		r = st->r_frame_rate;
	if (r.num <= 0 || r.den <= 0)
		r = (AVRational) {24, 1};
	return r;
}

/* The end of the last sample a stream's index points at, in bytes: a file
 * cut short (an interrupted download) is shorter than that.  Demuxers
 * without an index give 0. */
static int64_t
indexed_end(AVStream *st)
{
	int64_t		end = 0;
	int			n = avformat_index_get_entries_count(st);

	for (int i = 0; i < n; i++)
	{
		const AVIndexEntry *e = avformat_index_get_entry(st, i);

		if (e && e->pos + e->size > end)
			end = e->pos + e->size;
	}
	return end;
}

/* Reads the stream layout and parameters of a segment, then closes it. */
void
hc_probe_segment(SegInfo *seg)
{
	char		what[512];
	AVFormatContext *ic;
	int			v,
				a;
	AVStream   *vst;

	snprintf(what, sizeof(what), "segment %d (%s)", seg->index, seg->label);
	ic = hc_open_input(seg->file, HC_VIDEO_FORMATS, seg->index, what);
	v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);
	a = hc_stream(ic, AVMEDIA_TYPE_AUDIO);
	if (v < 0)
		hc_fail(seg->index, "%s has no video stream", what);
	vst = ic->streams[v];
	if (vst->codecpar->width <= 0 || vst->codecpar->height <= 0 ||
		vst->codecpar->width > 8192 || vst->codecpar->height > 8192)
		hc_fail(seg->index, "%s has an unusable picture size %dx%d", what,
				vst->codecpar->width, vst->codecpar->height);
	seg->vpar = avcodec_parameters_alloc();
	avcodec_parameters_copy(seg->vpar, vst->codecpar);
	seg->vtb = vst->time_base;
	seg->fps = hc_stream_fps(vst);
	if (vst->duration > 0)
		seg->vdur = vst->duration * av_q2d(vst->time_base);
	else if (ic->duration > 0)
		seg->vdur = ic->duration / (double) AV_TIME_BASE;
	else
		seg->vdur = 0;
	if (seg->vdur <= 0 || seg->vdur > 6 * 3600)
		hc_fail(seg->index, "%s has no usable duration (%.3f s)", what, seg->vdur);
	{
		int64_t		size = avio_size(ic->pb);
		int64_t		need = FFMAX(indexed_end(vst), a >= 0 ? indexed_end(ic->streams[a]) : 0);

		if (size > 0 && need > size)
			hc_fail(seg->index, "%s is truncated: the file has %lld bytes, its index points "
					"up to byte %lld", what, (long long) size, (long long) need);
	}
	if (a >= 0 && ic->streams[a]->codecpar->sample_rate > 0 &&
		ic->streams[a]->codecpar->ch_layout.nb_channels > 0)
	{
		seg->apar = avcodec_parameters_alloc();
		avcodec_parameters_copy(seg->apar, ic->streams[a]->codecpar);
	}
	avformat_close_input(&ic);
}

/* threads: 0 for as many as there are cores (the C API's default is one). */
AVCodecContext *
hc_open_decoder(AVStream *st, int segment, const char *what, int threads)
{
	const AVCodec *codec = avcodec_find_decoder(st->codecpar->codec_id);
	AVCodecContext *dec;
	int			rc;

	if (!codec)
		hc_fail(segment, "%s uses a codec this build cannot decode (%s)", what,
				avcodec_get_name(st->codecpar->codec_id));
	dec = avcodec_alloc_context3(codec);
	if (!dec)
		hc_fail(segment, "out of memory");
	avcodec_parameters_to_context(dec, st->codecpar);
	dec->pkt_timebase = st->time_base;
	dec->thread_count = threads;
	if ((rc = avcodec_open2(dec, codec, NULL)) < 0)
		hc_fail(segment, "%s: the %s decoder cannot be opened: %s", what,
				avcodec_get_name(st->codecpar->codec_id), hc_err(rc));
	return dec;
}
