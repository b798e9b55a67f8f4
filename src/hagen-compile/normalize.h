/*
 * normalize.h: the re-encoding path, for segments that differ.  Each
 * segment gets its own small filter graph (to the common frame rate, scaled
 * and padded to the target size, square pixels, yuv420p) feeding one
 * long-lived H.264 encoder: memory stays the same whatever the number of
 * segments, unlike one big concat graph.
 *
 * Crossfades are made on the way to the encoder: the last frames of a
 * segment that fades into the next are held back (a queue as long as the
 * fade), then blended into the first frames of the next segment.  Memory is
 * twice the fade's frames at most, whatever the number of segments (one
 * graph with xfade holds every input).
 */
#ifndef HAGEN_COMPILE_NORMALIZE_H
#define HAGEN_COMPILE_NORMALIZE_H

#include "hc.h"

#include <libavfilter/avfilter.h>

typedef struct VideoEnc
{
	AVFormatContext *oc;
	AVStream   *st;
	AVCodecContext *enc;
	AVPacket   *pkt;
	int			width;
	int			height;
	AVRational	fps;
	int64_t		frames;			/* frames encoded: the output's video timeline */
	AVFrame   **queue;			/* the current segment's newest frames, held back */
	int			nqueue;
	AVFrame   **fading;			/* the previous segment's last frames, to blend */
	int			nfading;
	int			capacity;		/* of each array: the longest fade + 1 */
	int			threads;		/* of the encoder, decoders and filters; 0: one per core */
} VideoEnc;

typedef struct SegVideo
{
	VideoEnc   *ve;
	AVCodecContext *dec;
	AVFilterGraph *graph;
	AVFilterContext *src;
	AVFilterContext *sink;
	AVFrame    *frame;
	AVFrame    *filtered;
	int64_t		frames;			/* frames of this segment sent to the encoder */
	int64_t		end_pts;		/* end of the last decoded frame, stream time base */
	int64_t		max_frames;		/* the segment's duration in output frames */
	int64_t		skip;			/* its first frames that are counted but not taken:
								 * a chunk before this one blended them */
	int			hold;			/* frames to hold back for the next segment's fade */
	int			fade_pos;		/* frames of the previous one blended in so far */
	int			segment;
	char		what[300];
} SegVideo;

extern VideoEnc *venc_create(AVFormatContext *oc, int width, int height, AVRational fps,
							  int max_fade, int threads);
extern void venc_finish(VideoEnc *ve);

/* hold: how many of the segment's last frames fade into the next one;
 * the frames held back by the previous segment fade into this one.  skip:
 * how many of its first frames to count but leave out (a chunk after the
 * one that blended them); limit: stop after this many frames (0: none; the
 * head of the next segment that a chunk blends into its end). */
extern void segvideo_open(SegVideo *sv, VideoEnc *ve, AVStream *st, double duration,
						  int hold, int skip, int limit, int segment, const char *what);
/* Whether the segment has given every frame it may. */
extern bool segvideo_full(const SegVideo *sv);
extern void segvideo_packet(SegVideo *sv, AVPacket *pkt);
extern void segvideo_flush(SegVideo *sv);
extern void segvideo_close(SegVideo *sv);

#endif
