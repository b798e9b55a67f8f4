/*
 * normalize.h: the re-encoding path, for segments that differ.  Each
 * segment gets its own small filter graph (to the common frame rate, scaled
 * and padded to the target size, square pixels, yuv420p) feeding one
 * long-lived H.264 encoder: memory stays the same whatever the number of
 * segments, unlike one big concat graph.
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
	int			segment;
	char		what[300];
} SegVideo;

extern VideoEnc *venc_create(AVFormatContext *oc, int width, int height, AVRational fps);
extern void venc_finish(VideoEnc *ve);

extern void segvideo_open(SegVideo *sv, VideoEnc *ve, AVStream *st, double duration,
						  int segment, const char *what);
extern void segvideo_packet(SegVideo *sv, AVPacket *pkt);
extern void segvideo_flush(SegVideo *sv);
extern void segvideo_close(SegVideo *sv);

#endif
