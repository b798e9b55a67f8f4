/*
 * chunk.c: the "chunk" task — some consecutive segments of a re-encode,
 * video only, exactly as a single compile would have encoded them.
 *
 * A compile that must re-encode can be split at segment boundaries and its
 * chunks encoded at once by different workers, each with its own encoder
 * and the same settings (the target and the fades come from the plan, in
 * the manifest).  At a boundary with a crossfade, the blended frames belong
 * to the chunk before: it holds back the last frames of its last segment as
 * a single compile would, then decodes the first frames of the next segment
 * (the "head", listed last) and blends and encodes them.  The chunk after
 * counts those first frames but leaves them out.  Decoding a head costs the
 * fade's frames only, and every frame goes through the very filter graph a
 * single compile gives it, so the join (join.c) of the chunks has the frame
 * count, the timestamps and the blends of a single compile.
 *
 * The result names, for each segment of the chunk, how many frames it gave
 * and how many of them were held back for the next fade: the join places
 * the audio with them.
 */
#include "compile.h"

#include <math.h>
#include <sys/stat.h>

/* Runs one segment of the chunk through the encoder (the head: until the
 * frames fading into it are there). */
static void
run_chunk_segment(Compile *c, int i, int hold, int skip)
{
	SegInfo    *s = &c->m.segs[i];
	char		what[300];
	AVFormatContext *ic;
	AVPacket   *pkt = av_packet_alloc();
	SegVideo	sv;
	int			v,
				rc = 0;

	snprintf(what, sizeof(what), "segment %d (%s)", s->index, s->label);
	ic = hc_open_input(s->file, HC_VIDEO_FORMATS, s->index, what);
	v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);
	if (v < 0)
		hc_fail(s->index, "%s has no video stream", what);
	/* Audio is the join's business: not even read. */
	for (unsigned k = 0; k < ic->nb_streams; k++)
		if ((int) k != v)
			ic->streams[k]->discard = AVDISCARD_ALL;
	c->starts[i] = c->ve->frames / av_q2d(c->fps);
	segvideo_open(&sv, c->ve, ic->streams[v], s->vdur, hold, skip, s->head ? s->fade_frames : 0,
				  s->index, what);
	compile_progress(c, i, 0);
	while (!(s->head && segvideo_full(&sv)) && (rc = av_read_frame(ic, pkt)) >= 0)
	{
		if (pkt->flags & AV_PKT_FLAG_CORRUPT)
			hc_fail(s->index, "%s is damaged: a packet at %.2f s is corrupt", what,
					pkt->pts != AV_NOPTS_VALUE ? pkt->pts * av_q2d(ic->streams[v]->time_base) : 0);
		if (pkt->stream_index == v)
		{
			segvideo_packet(&sv, pkt);
			compile_progress(c, i, sv.frames / av_q2d(c->fps) / s->vdur);
		}
		av_packet_unref(pkt);
	}
	if (rc < 0 && rc != AVERROR_EOF)
		hc_fail(s->index, "%s is damaged: reading it failed: %s", what, hc_err(rc));
	if (!(s->head && segvideo_full(&sv)))
		segvideo_flush(&sv);
	if (sv.frames == 0)
		hc_fail(s->index, "%s has no video frames", what);
	c->durations[i] = sv.frames / av_q2d(c->fps);
	/* A file cut short still demuxes to its end without an error. */
	if (!s->head && c->durations[i] < s->vdur * 0.9 - 0.1)
		hc_fail(s->index, "%s is truncated: its video stops at %.2f s of %.2f s", what,
				c->durations[i], s->vdur);
	s->frames = (int) sv.frames;
	segvideo_close(&sv);
	av_packet_free(&pkt);
	avformat_close_input(&ic);
}

int
hc_chunk(Compile *c)
{
	Manifest   *m = &c->m;
	int			last = m->nsegs - 1 - (m->segs[m->nsegs - 1].head ? 1 : 0);
	int			rc;
	int64_t		want;
	json_t	   *segs = json_array();
	struct stat sb;
	char		fps[32];

	if (last < 0)
		hc_fail(0, "the manifest of a chunk lists no segment to encode, only a head");
	c->mode = MODE_NORMALIZE;
	compile_plan(c);
	hc_remove_on_failure(m->output);
	if ((rc = avformat_alloc_output_context2(&c->oc, NULL, "mp4", m->output)) < 0)
		hc_fail(0, "the output cannot be created: %s", hc_err(rc));
	c->ve = venc_create(c->oc, c->width, c->height, c->fps, c->max_fade, m->threads);
	/* An intermediate file: its index may stay at the end. */
	if ((rc = avio_open(&c->oc->pb, m->output, AVIO_FLAG_WRITE)) < 0)
		hc_fail(0, "the output %s cannot be written: %s", m->output, hc_err(rc));
	if ((rc = avformat_write_header(c->oc, NULL)) < 0)
		hc_fail(0, "the output header cannot be written: %s", hc_err(rc));

	want = 0;
	for (int i = 0; i < m->nsegs; i++)
	{
		SegInfo    *s = &m->segs[i];
		int			hold = i + 1 < m->nsegs ? m->segs[i + 1].fade_frames : 0;
		int			skip = i == 0 ? s->fade_frames : 0;
		int			held;

		run_chunk_segment(c, i, s->head ? 0 : hold, skip);
		if (s->head)
		{
			/* Its first frames, blended with what the segment before held. */
			want += s->frames;
			break;
		}
		held = c->ve->nqueue;
		/*
		 * Where a chunk boundary has a fade, the frames blended on either
		 * side must be the single compile's: the chunk after leaves out as
		 * many frames as the fade has, and this segment's own fade out may
		 * not reach into the frames it left out.
		 */
		if ((skip > 0 || (i == last && hold > 0)) && s->frames - skip < hold)
			hc_fail(s->index, "segment %d (%s) has %d frames: too few for its crossfades (%d frames in, "
					"%d out) when the compile is split there", s->index, s->label, s->frames, skip, hold);
		s->held = held;
		want += s->frames - held - (i == 0 ? skip : 0);
		json_array_append_new(segs, json_pack("{s:i,s:i,s:i}", "index", s->index, "frames", s->frames,
											  "held", held));
	}
	venc_finish(c->ve);
	if (c->ve->frames != want)
		hc_fail(0, "the chunk has %lld frames where its segments give %lld", (long long) c->ve->frames,
				(long long) want);
	if ((rc = av_write_trailer(c->oc)) < 0)
		hc_fail(0, "the output cannot be finished: %s", hc_err(rc));
	avio_closep(&c->oc->pb);
	stat(m->output, &sb);
	snprintf(fps, sizeof(fps), "%d/%d", c->fps.num, c->fps.den);
	hc_emit(json_pack("{s:{s:s,s:s,s:i,s:i,s:I,s:f,s:I,s:i,s:i,s:s,s:o,s:f}}", "result",
					  "task", "chunk", "file", m->output, "first", m->segs[0].index,
					  "last", m->segs[last].index, "frames", (json_int_t) c->ve->frames,
					  "duration", c->ve->frames / av_q2d(c->fps), "size", (json_int_t) sb.st_size,
					  "width", c->width, "height", c->height, "fps", fps, "segments", segs,
					  "cpu_seconds", hc_cpu_seconds()));
	hc_keep_files();
	return 0;
}
