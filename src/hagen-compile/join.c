/*
 * join.c: the "join" task — the chunks of a split re-encode (chunk.c)
 * stream-copied one after another, and the audio of every segment placed,
 * mixed with the music and encoded once over the whole timeline: the file a
 * single compile makes, frame for frame.
 *
 * The manifest gives, for each segment, the frames it gave its chunk and
 * how many of them were held back to fade into the next one (its chunk's
 * result).  From them follow, as in a single compile, where each segment
 * starts and ends on the output's timeline and where each chunk's first
 * frame goes: each chunk's packets are offset by a whole number of frames,
 * and a chunk with more or fewer frames than its segments give fails the
 * join.  The audio is placed against those exact frame counts, so it is
 * sample for sample what a single compile writes (audio.c does both).
 */
#include "compile.h"

#include <string.h>

/* The chunk being copied, and where its frames go. */
typedef struct Cursor
{
	int			chunk;			/* 0-based; nchunks when all are copied */
	AVFormatContext *ic;
	AVStream   *in;
	AVPacket   *pkt;
	bool		pending;		/* pkt holds a packet read but not written */
	int64_t		first;			/* the chunk's first frame on the output's timeline */
	int64_t		want;			/* the frames its segments give */
	int64_t		copied;
	int64_t		offset;			/* first, in the output's time base */
} Cursor;

/* Frames before each segment (E), and blended at its start (g), as a single
 * compile counts them. */
static int64_t *ends;
static int64_t *blended;

static const char *
chunk_name(Compile *c, int k)
{
	static char buf[96];
	const ChunkRef *r = &c->m.chunks[k];

	snprintf(buf, sizeof(buf), "chunk %d (segments %d to %d)", k + 1, r->first, r->last);
	return buf;
}

static void
cursor_open(Compile *c, Cursor *cur, int k)
{
	const ChunkRef *r = &c->m.chunks[k];
	char		what[128];
	int			v;
	AVCodecParameters *p,
			   *q;

	snprintf(what, sizeof(what), "%s", chunk_name(c, k));
	cur->chunk = k;
	cur->ic = hc_open_input(r->file, HC_VIDEO_FORMATS, 0, what);
	v = hc_stream(cur->ic, AVMEDIA_TYPE_VIDEO);
	if (v < 0)
		hc_fail(0, "%s has no video stream", what);
	cur->in = cur->ic->streams[v];
	for (unsigned i = 0; i < cur->ic->nb_streams; i++)
		if ((int) i != v)
			cur->ic->streams[i]->discard = AVDISCARD_ALL;
	/* Stream copy needs every chunk encoded alike. */
	p = cur->in->codecpar;
	q = c->vst->codecpar;
	if (p->codec_id != q->codec_id || p->width != q->width || p->height != q->height ||
		p->format != q->format || p->extradata_size != q->extradata_size ||
		(p->extradata_size > 0 && memcmp(p->extradata, q->extradata, p->extradata_size) != 0))
		hc_fail(0, "%s was not encoded like chunk 1 (%s %dx%d against %s %dx%d, or other encoder "
				"settings): the chunks cannot be joined", what, avcodec_get_name(p->codec_id), p->width,
				p->height, avcodec_get_name(q->codec_id), q->width, q->height);
	cur->first = ends[r->first - 1] + blended[r->first - 1];
	cur->want = 0;
	for (int i = r->first - 1; i < r->last; i++)
		cur->want += c->m.segs[i].frames - c->m.segs[i].held;
	cur->want += (r->last < c->m.nsegs ? blended[r->last] : 0) - blended[r->first - 1];
	cur->copied = 0;
	cur->offset = av_rescale_q(cur->first, av_inv_q(c->fps), c->vst->time_base);
	cur->pending = false;
}

static void
cursor_close(Compile *c, Cursor *cur)
{
	if (cur->copied != cur->want)
		hc_fail(0, "%s has %lld frames where its segments give %lld: it does not belong to this join",
				chunk_name(c, cur->chunk), (long long) cur->copied, (long long) cur->want);
	avformat_close_input(&cur->ic);
}

/* Copies the chunks' packets up to frame `until` of the output (by decoding
 * time; -1: to the end), opening the next chunk at the end of one. */
static void
copy_video(Compile *c, Cursor *cur, int64_t until)
{
	AVRational	otb = c->vst->time_base;
	int64_t		limit = until < 0 ? INT64_MAX : av_rescale_q(until, av_inv_q(c->fps), otb);
	int			rc;

	while (cur->chunk < c->m.nchunks)
	{
		if (!cur->pending)
		{
			rc = av_read_frame(cur->ic, cur->pkt);
			if (rc == AVERROR_EOF)
			{
				cursor_close(c, cur);
				if (cur->chunk + 1 >= c->m.nchunks)
				{
					cur->chunk = c->m.nchunks;
					return;
				}
				cursor_open(c, cur, cur->chunk + 1);
				continue;
			}
			if (rc < 0)
				hc_fail(0, "%s cannot be read: %s", chunk_name(c, cur->chunk), hc_err(rc));
			if (cur->pkt->stream_index != cur->in->index)
			{
				av_packet_unref(cur->pkt);
				continue;
			}
			if (cur->pkt->pts == AV_NOPTS_VALUE)
				hc_fail(0, "%s has video packets without timestamps", chunk_name(c, cur->chunk));
			if (cur->pkt->dts == AV_NOPTS_VALUE)
				cur->pkt->dts = cur->pkt->pts;
			av_packet_rescale_ts(cur->pkt, cur->in->time_base, otb);
			cur->pkt->pts += cur->offset;
			cur->pkt->dts += cur->offset;
			cur->pending = true;
		}
		if (cur->pkt->dts >= limit)
			return;
		if (c->last_dts != AV_NOPTS_VALUE && cur->pkt->dts <= c->last_dts)
			hc_fail(0, "%s does not follow the chunk before it: a frame decoded at %lld comes after %lld",
					chunk_name(c, cur->chunk), (long long) cur->pkt->dts, (long long) c->last_dts);
		c->last_dts = cur->pkt->dts;
		cur->pkt->stream_index = c->vst->index;
		cur->pkt->pos = -1;
		cur->copied++;
		cur->pending = false;
		if ((rc = av_interleaved_write_frame(c->oc, cur->pkt)) < 0)
			hc_fail(0, "writing %s failed: %s", chunk_name(c, cur->chunk), hc_err(rc));
	}
}

static int64_t
samples_at(Compile *c, int64_t frames)
{
	return av_rescale_q(frames, av_inv_q(c->fps), (AVRational) {1, HC_RATE});
}

/* The audio of segment i, placed between the output frames ends[i] and
 * ends[i + 1], as a single compile places it. */
static void
join_audio(Compile *c, int i)
{
	SegInfo    *s = &c->m.segs[i];
	char		what[300];
	AVFormatContext *ic;
	AVStream   *ain = NULL;
	AVPacket   *pkt = av_packet_alloc();
	ClipAudio	ca;
	int64_t		audio_start = c->ao->emitted,
				end = samples_at(c, ends[i + 1]),
				start;
	int			v,
				a,
				rc;

	snprintf(what, sizeof(what), "segment %d (%s)", s->index, s->label);
	ic = hc_open_input(s->file, HC_VIDEO_FORMATS, s->index, what);
	v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);
	a = s->apar ? hc_stream(ic, AVMEDIA_TYPE_AUDIO) : -1;
	if (v < 0)
		hc_fail(s->index, "%s has no video stream", what);
	start = ic->streams[v]->start_time != AV_NOPTS_VALUE ? ic->streams[v]->start_time : 0;
	for (unsigned k = 0; k < ic->nb_streams; k++)
		if ((int) k != a)
			ic->streams[k]->discard = AVDISCARD_ALL;
	ain = a >= 0 ? ic->streams[a] : NULL;
	clip_audio_open(&ca, ain, start * av_q2d(ic->streams[v]->time_base), s->index, what);
	if (ain)
	{
		while ((rc = av_read_frame(ic, pkt)) >= 0)
		{
			if (pkt->stream_index == a)
			{
				int64_t		allowed;

				clip_audio_packet(&ca, pkt);
				allowed = end - audio_start - ca.emitted;
				if (allowed > 0)
					audio_mix(c->ao, &ca, allowed, false);
			}
			av_packet_unref(pkt);
		}
		if (rc != AVERROR_EOF)
			hc_fail(s->index, "%s is damaged: reading it failed: %s", what, hc_err(rc));
	}
	clip_audio_flush(&ca);
	audio_mix(c->ao, &ca, end - audio_start - ca.emitted, true);
	/* The audio under the frames held back fades into the next segment. */
	if (s->held > 0)
		audio_hold_tail(c->ao, &ca, samples_at(c, ends[i + 1] + s->held) - end);
	clip_audio_close(&ca);
	av_packet_free(&pkt);
	avformat_close_input(&ic);
}

int
hc_join(Compile *c)
{
	Manifest   *m = &c->m;
	Cursor		cur = {0};
	bool		any_audio = false;
	int			rc;

	c->mode = MODE_NORMALIZE;
	compile_plan(c);
	/* Where every segment ends on the output's timeline. */
	ends = hc_alloc(sizeof(int64_t) * (m->nsegs + 1));
	blended = hc_alloc(sizeof(int64_t) * (m->nsegs + 1));
	for (int i = 0; i < m->nsegs; i++)
	{
		SegInfo    *s = &m->segs[i];

		blended[i] = i == 0 ? 0 : FFMIN(m->segs[i - 1].held, s->frames);
		ends[i + 1] = ends[i] + s->frames - s->held;
		c->starts[i] = ends[i] / av_q2d(c->fps);
		c->durations[i] = s->frames / av_q2d(c->fps);
		any_audio = any_audio || s->apar != NULL;
	}
	if (m->segs[m->nsegs - 1].held > 0)
		hc_fail(m->nsegs, "the manifest's last segment holds frames back for a fade after it");

	hc_remove_on_failure(m->output);
	if ((rc = avformat_alloc_output_context2(&c->oc, NULL, "mp4", m->output)) < 0)
		hc_fail(0, "the output cannot be created: %s", hc_err(rc));
	/* The video stream as chunk 1 has it, timed as the encoder times it. */
	cur.pkt = av_packet_alloc();
	{
		AVFormatContext *ic = hc_open_input(m->chunks[0].file, HC_VIDEO_FORMATS, 0, chunk_name(c, 0));
		int			v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);

		if (v < 0)
			hc_fail(0, "%s has no video stream", chunk_name(c, 0));
		c->vst = avformat_new_stream(c->oc, NULL);
		avcodec_parameters_copy(c->vst->codecpar, ic->streams[v]->codecpar);
		c->vst->codecpar->codec_tag = 0;
		avformat_close_input(&ic);
	}
	if (c->vst->codecpar->width != c->width || c->vst->codecpar->height != c->height)
		hc_fail(0, "chunk 1 is %dx%d, not the target %dx%d", c->vst->codecpar->width,
				c->vst->codecpar->height, c->width, c->height);
	c->vst->time_base = av_inv_q(c->fps);
	c->vst->avg_frame_rate = c->fps;
	if (any_audio || m->music_file)
		c->ao = audio_out_create(c->oc, m->music_file, m->music_volume, m->video_volume,
								 c->total_estimate);
	compile_open_output(c);

	cursor_open(c, &cur, 0);
	for (int i = 0; i < m->nsegs; i++)
	{
		compile_progress(c, i, 0);
		copy_video(c, &cur, ends[i + 1] + m->segs[i].held);
		if (c->ao)
			join_audio(c, i);
	}
	copy_video(c, &cur, -1);
	if (c->ao)
		audio_out_finish(c->ao);
	av_packet_free(&cur.pkt);
	compile_finish(c, json_pack("{s:s,s:i}", "task", "join", "chunks", m->nchunks));
	return 0;
}
