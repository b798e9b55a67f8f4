/*
 * frame.c: one frame of a video as a JPEG (`hagen-compile frame`), used for
 * the thumbnail of the final video and for chaining a clip's last frame.
 */
#include "hc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libswscale/swscale.h>

/* Decodes from the keyframe before `target` (stream time base) and keeps
 * the first frame at or after it, or the last one decoded. */
static AVFrame *
decode_at(AVFormatContext *ic, int v, AVCodecContext *dec, int64_t target, bool last, bool first)
{
	AVPacket   *pkt = av_packet_alloc();
	AVFrame    *frame = av_frame_alloc();
	AVFrame    *kept = av_frame_alloc();
	bool		have = false,
				done = false;
	int			rc;

	while (!done)
	{
		rc = av_read_frame(ic, pkt);
		if (rc >= 0 && pkt->stream_index != v)
		{
			av_packet_unref(pkt);
			continue;
		}
		avcodec_send_packet(dec, rc >= 0 ? pkt : NULL);
		av_packet_unref(pkt);
		while (!done && avcodec_receive_frame(dec, frame) >= 0)
		{
			av_frame_unref(kept);
			av_frame_move_ref(kept, frame);
			have = true;
			if (first || (!last && kept->best_effort_timestamp != AV_NOPTS_VALUE &&
						  kept->best_effort_timestamp >= target))
				done = true;
		}
		if (rc < 0)
			break;
	}
	av_packet_free(&pkt);
	av_frame_free(&frame);
	if (!have)
		av_frame_free(&kept);
	return kept;
}

static const char *
write_jpeg(AVFrame *src, const char *out)
{
	const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
	AVCodecContext *enc;
	AVFrame    *yuv = av_frame_alloc();
	AVPacket   *pkt = av_packet_alloc();
	struct SwsContext *sws;
	FILE	   *f;
	int			rc;

	if (!codec)
		return "this FFmpeg build has no JPEG encoder";
	enc = avcodec_alloc_context3(codec);
	enc->width = src->width;
	enc->height = src->height;
	enc->pix_fmt = AV_PIX_FMT_YUVJ420P;
	enc->time_base = (AVRational) {1, 25};
	enc->flags |= AV_CODEC_FLAG_QSCALE;
	enc->global_quality = FF_QP2LAMBDA * 3;
	if (avcodec_open2(enc, codec, NULL) < 0)
		return "the JPEG encoder cannot be opened";
	yuv->width = src->width;
	yuv->height = src->height;
	yuv->format = AV_PIX_FMT_YUVJ420P;
	if (av_frame_get_buffer(yuv, 0) < 0)
		return "out of memory";
	sws = sws_getContext(src->width, src->height, src->format, src->width, src->height,
						 AV_PIX_FMT_YUVJ420P, SWS_BICUBIC, NULL, NULL, NULL);
	if (!sws)
		return "the frame's pixel format cannot be converted";
	sws_scale(sws, (const uint8_t *const *) src->data, src->linesize, 0, src->height,
			  yuv->data, yuv->linesize);
	sws_freeContext(sws);
	yuv->pts = 0;
	yuv->quality = enc->global_quality;
	if ((rc = avcodec_send_frame(enc, yuv)) < 0 || (rc = avcodec_send_frame(enc, NULL)) < 0 ||
		(rc = avcodec_receive_packet(enc, pkt)) < 0)
		return "the JPEG encoder failed";
	if (!(f = fopen(out, "wb")))
		return "the JPEG cannot be written";
	if (fwrite(pkt->data, 1, pkt->size, f) != (size_t) pkt->size || fclose(f) != 0)
		return "the JPEG cannot be written";
	av_packet_free(&pkt);
	av_frame_free(&yuv);
	avcodec_free_context(&enc);
	return NULL;
}

const char *
hc_frame_to_jpeg(const char *file, double at, bool keyframe, const char *out, double *time,
				 int *width, int *height)
{
	AVFormatContext *ic = hc_open_input(file, HC_VIDEO_FORMATS, 0, "the video");
	int			v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);
	AVStream   *st;
	AVCodecContext *dec;
	AVFrame    *frame;
	int64_t		start,
				target;
	const char *err;

	if (v < 0)
		return "the file has no video stream";
	st = ic->streams[v];
	start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
	if (at < 0)
		target = st->duration > 0 ? start + st->duration
			: av_rescale_q(ic->duration, AV_TIME_BASE_Q, st->time_base);
	else
		target = start + (int64_t) (at / av_q2d(st->time_base));
	dec = hc_open_decoder(st, 0, "the video", keyframe ? 1 : 0);
	/* Back to the keyframe at or before the wanted time. */
	if (target > start)
		avformat_seek_file(ic, v, INT64_MIN, target, target, 0);
	frame = decode_at(ic, v, dec, target, at < 0, keyframe);
	if (!frame)
		return "no frame could be decoded";
	*time = (frame->best_effort_timestamp != AV_NOPTS_VALUE ? frame->best_effort_timestamp - start : 0)
		* av_q2d(st->time_base);
	*width = frame->width;
	*height = frame->height;
	err = write_jpeg(frame, out);
	av_frame_free(&frame);
	avcodec_free_context(&dec);
	avformat_close_input(&ic);
	return err;
}

int
hc_frame_main(int argc, char **argv)
{
	double		at = -1,
				t;
	int			w,
				h;
	const char *err;
	char	   *end;

	if (argc == 4 && strcmp(argv[1], "--at") == 0)
	{
		at = strtod(argv[2], &end);
		if (*end || !(at >= 0 && at < 1e6))
			hc_fail(0, "--at takes a number of seconds, not \"%s\"", argv[2]);
	}
	else if (!(argc == 3 && strcmp(argv[1], "--last") == 0))
		hc_fail(0, "usage: hagen-compile frame FILE (--at SECONDS | --last) OUT.jpg");
	hc_remove_on_failure(argv[argc - 1]);
	if ((err = hc_frame_to_jpeg(argv[0], at, false, argv[argc - 1], &t, &w, &h)))
		hc_fail(0, "%s: %s", argv[0], err);
	hc_emit(json_pack("{s:{s:o,s:f,s:i,s:i}}", "frame", "file", hc_json_text(argv[argc - 1]), "time", t,
					  "width", w, "height", h));
	return 0;
}
