/*
 * image.c: a photo made ready for an image-to-video model
 * (`hagen-compile image`).
 *
 *   hagen-compile image IN OUT.jpg --aspect W:H [--fit crop|pad]
 *                 [--max-side N] [--min-side N] [--max-bytes N]
 *
 * Kling and xAI make a clip in the shape of the photo they are given, not
 * in the shape asked: a landscape photo gives a landscape clip, whatever the
 * project's aspect ratio.  So the photo is fitted to the project's shape
 * first: the EXIF orientation is applied (a phone's portrait photo is
 * stored sideways), then the centre is cut to the aspect ratio (crop) or the
 * whole photo is laid on a black canvas of that shape (pad), scaled so that
 * its longer side is at most --max-side (and its shorter side at least
 * --min-side, Kling's 300 px), and written as a baseline JPEG of at most
 * --max-bytes (the quality steps down until it fits).
 *
 * One line on stdout: {"image":{"file","width","height","bytes","quality",
 * "source":{"width","height","orientation","format"}}} or {"error":...}.
 */
#include "hc.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <libavutil/display.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>

/* Still images we take (by content: the file has no extension). */
#define HC_IMAGE_FORMATS "image2,jpeg_pipe,png_pipe,webp_pipe,gif,gif_pipe,bmp_pipe,tiff_pipe"
/* Larger pictures than this are refused before decoding more than a header. */
#define HC_MAX_PIXELS (120 * 1000 * 1000)

/* Opens a photo as hc_open_input opens media (local files, known formats
 * only), with the image2 demuxer reading the one file named: never a
 * numbered sequence or a glob. */
static AVFormatContext *
open_photo(const char *path)
{
	AVFormatContext *ic = avformat_alloc_context();
	AVDictionary *opts = NULL;
	const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	int			rc;

	if (!ic)
		hc_fail(0, "out of memory");
	ic->protocol_whitelist = av_strdup("file");
	ic->format_whitelist = av_strdup(HC_IMAGE_FORMATS);
	av_dict_set(&opts, "protocol_whitelist", "file", 0);
	av_dict_set(&opts, "pattern_type", "none", 0);
	rc = avformat_open_input(&ic, path, NULL, &opts);
	av_dict_free(&opts);
	if (rc < 0)
		hc_fail(0, "the photo cannot be read (%s): %s", name,
				rc == AVERROR_INVALIDDATA ? "not a JPEG, PNG, WebP or GIF image, or damaged" : hc_err(rc));
	if ((rc = avformat_find_stream_info(ic, NULL)) < 0)
		hc_fail(0, "the photo cannot be read (%s): %s", name, hc_err(rc));
	return ic;
}

typedef struct Rgb
{
	int			w,
				h;
	uint8_t    *px;				/* packed RGB24, w * 3 bytes a row */
} Rgb;

static Rgb
rgb_alloc(int w, int h)
{
	Rgb			r = {w, h, hc_alloc((size_t) w * h * 3)};

	return r;
}

/* The EXIF orientation (1..8) of a decoded photo: the JPEG decoder puts
 * the EXIF tags in the frame's metadata; a display matrix (other formats,
 * newer libraries) is read as the rotation it describes. */
static int
orientation_of(AVFrame *f, AVStream *st)
{
	AVDictionaryEntry *e = av_dict_get(f->metadata, "Orientation", NULL, 0);
	const AVFrameSideData *sd;
	double		angle;

	if (e && e->value[0] >= '1' && e->value[0] <= '8' && e->value[1] == '\0')
		return e->value[0] - '0';
	sd = av_frame_get_side_data(f, AV_FRAME_DATA_DISPLAYMATRIX);
	if (sd == NULL)
	{
		size_t		size;
		const uint8_t *m = av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, &size);

		if (m == NULL || size < 9 * sizeof(int32_t))
			return 1;
		angle = av_display_rotation_get((const int32_t *) m);
	}
	else
		angle = av_display_rotation_get((const int32_t *) sd->data);
	if (isnan(angle))
		return 1;
	/* av_display_rotation_get: counterclockwise degrees to undo. */
	switch ((int) lrint(angle))
	{
		case 90:
		case -270:
			return 8;
		case -90:
		case 270:
			return 6;
		case 180:
		case -180:
			return 3;
		default:
			return 1;
	}
}

/* The photo turned upright: EXIF orientations 2 to 8 mirror and/or rotate. */
static Rgb
orient(Rgb src, int o)
{
	bool		swap = o >= 5;
	Rgb			dst;

	if (o <= 1 || o > 8)
		return src;
	dst = rgb_alloc(swap ? src.h : src.w, swap ? src.w : src.h);
	for (int y = 0; y < dst.h; y++)
		for (int x = 0; x < dst.w; x++)
		{
			int			sx,
						sy;

			switch (o)
			{
				case 2: sx = src.w - 1 - x; sy = y; break;
				case 3: sx = src.w - 1 - x; sy = src.h - 1 - y; break;
				case 4: sx = x; sy = src.h - 1 - y; break;
				case 5: sx = y; sy = x; break;
				case 6: sx = y; sy = src.h - 1 - x; break;
				case 7: sx = src.w - 1 - y; sy = src.h - 1 - x; break;
				default: sx = src.w - 1 - y; sy = x; break;	/* 8 */
			}
			memcpy(dst.px + ((size_t) y * dst.w + x) * 3, src.px + ((size_t) sy * src.w + sx) * 3, 3);
		}
	free(src.px);
	return dst;
}

/* Scales a w x h region of src at (x0, y0) to dst's size, or to a w2 x h2
 * region of dst at (dx, dy). */
static void
scale_into(Rgb src, int x0, int y0, int w, int h, Rgb dst, int dx, int dy, int w2, int h2)
{
	struct SwsContext *sws = sws_getContext(w, h, AV_PIX_FMT_RGB24, w2, h2, AV_PIX_FMT_RGB24,
											SWS_LANCZOS | SWS_ACCURATE_RND, NULL, NULL, NULL);
	const uint8_t *in[4] = {src.px + ((size_t) y0 * src.w + x0) * 3};
	int			in_stride[4] = {src.w * 3};
	uint8_t    *out[4] = {dst.px + ((size_t) dy * dst.w + dx) * 3};
	int			out_stride[4] = {dst.w * 3};

	if (sws == NULL)
		hc_fail(0, "the photo cannot be scaled from %dx%d to %dx%d", w, h, w2, h2);
	sws_scale(sws, in, in_stride, 0, h, out, out_stride);
	sws_freeContext(sws);
}

/* Scales a decoded picture (in its own pixel format, cropped or not) into a
 * w2 x h2 region of dst at (dx, dy). */
static void
scale_frame_into(AVFrame *src, Rgb dst, int dx, int dy, int w2, int h2)
{
	struct SwsContext *sws = sws_getContext(src->width, src->height, src->format, w2, h2,
											AV_PIX_FMT_RGB24,
											SWS_LANCZOS | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT,
											NULL, NULL, NULL);
	uint8_t    *out[4] = {dst.px + ((size_t) dy * dst.w + dx) * 3};
	int			out_stride[4] = {dst.w * 3};

	if (sws == NULL)
		hc_fail(0, "the photo's pixel format (%s) cannot be converted",
				av_get_pix_fmt_name(src->format));
	sws_scale(sws, (const uint8_t *const *) src->data, src->linesize, 0, src->height, out, out_stride);
	sws_freeContext(sws);
}

/* Encodes an RGB picture as a JPEG at a quantizer (2 best .. 31); returns
 * the packet, or NULL with *err set. */
static AVPacket *
encode_jpeg(Rgb pic, int q, const char **err)
{
	const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
	AVCodecContext *enc;
	AVFrame    *yuv;
	AVPacket   *pkt;
	struct SwsContext *sws;
	const uint8_t *in[4] = {pic.px};
	int			in_stride[4] = {pic.w * 3};

	if (codec == NULL)
	{
		*err = "this FFmpeg build has no JPEG encoder";
		return NULL;
	}
	enc = avcodec_alloc_context3(codec);
	yuv = av_frame_alloc();
	pkt = av_packet_alloc();
	if (!enc || !yuv || !pkt)
		hc_fail(0, "out of memory");
	enc->width = pic.w;
	enc->height = pic.h;
	enc->pix_fmt = AV_PIX_FMT_YUVJ420P;
	enc->time_base = (AVRational) {1, 25};
	enc->flags |= AV_CODEC_FLAG_QSCALE;
	enc->global_quality = FF_QP2LAMBDA * q;
	enc->thread_count = 1;
	if (avcodec_open2(enc, codec, NULL) < 0)
	{
		*err = "the JPEG encoder cannot be opened";
		return NULL;
	}
	yuv->width = pic.w;
	yuv->height = pic.h;
	yuv->format = AV_PIX_FMT_YUVJ420P;
	if (av_frame_get_buffer(yuv, 0) < 0)
		hc_fail(0, "out of memory");
	sws = sws_getContext(pic.w, pic.h, AV_PIX_FMT_RGB24, pic.w, pic.h, AV_PIX_FMT_YUVJ420P,
						 SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, NULL, NULL, NULL);
	if (sws == NULL)
	{
		*err = "the photo cannot be converted for the JPEG encoder";
		return NULL;
	}
	sws_scale(sws, in, in_stride, 0, pic.h, yuv->data, yuv->linesize);
	sws_freeContext(sws);
	yuv->pts = 0;
	yuv->quality = enc->global_quality;
	if (avcodec_send_frame(enc, yuv) < 0 || avcodec_send_frame(enc, NULL) < 0 ||
		avcodec_receive_packet(enc, pkt) < 0)
	{
		*err = "the JPEG encoder failed";
		return NULL;
	}
	av_frame_free(&yuv);
	avcodec_free_context(&enc);
	return pkt;
}

/* A positive integer option, or fail naming it. */
static long
number(const char *opt, const char *text, long lo, long hi)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || *end || end == text || v < lo || v > hi)
		hc_fail(0, "%s takes a whole number from %ld to %ld, not \"%s\"", opt, lo, hi, text);
	return v;
}

/* Even, and at least 2: JPEG's 4:2:0 chroma wants whole pairs. */
static int
even(double v)
{
	int			n = (int) lrint(v / 2) * 2;

	return n < 2 ? 2 : n;
}

/* The key of the line that reports a fitted photo: "image" on the command
 * line, "result" when the photo was asked for by a manifest (below). */
static const char *hc_image_line_key = "image";

int
hc_image_main(int argc, char **argv)
{
	const char *in,
			   *out,
			   *fit = "crop",
			   *err = NULL;
	long		aw = 0,
				ah = 0,
				max_side = 1920,
				min_side = 300,
				max_bytes = 10 * 1024 * 1024;
	AVFormatContext *ic;
	AVCodecContext *dec;
	AVPacket   *pkt;
	AVFrame    *frame;
	AVStream   *st;
	int			v,
				o,
				q,
				rc;
	Rgb			photo,
				pic;
	int			src_w,
				src_h,
				cw,
				ch,
				ow,
				oh;
	double		ratio,
				s;
	char		aspect[32];
	const char *usage = "usage: hagen-compile image IN OUT.jpg --aspect W:H [--fit crop|pad] "
		"[--max-side N] [--min-side N] [--max-bytes N]";
	FILE	   *f;

	if (argc < 2)
		hc_fail(0, "%s", usage);
	in = argv[0];
	out = argv[1];
	for (int i = 2; i < argc; i += 2)
	{
		if (i + 1 >= argc)
			hc_fail(0, "%s needs a value; %s", argv[i], usage);
		if (strcmp(argv[i], "--aspect") == 0)
		{
			char	   *colon = strchr(argv[i + 1], ':');

			if (colon == NULL)
				hc_fail(0, "--aspect takes W:H (16:9, 9:16, 1:1), not \"%s\"", argv[i + 1]);
			*colon = '\0';
			aw = number("--aspect", argv[i + 1], 1, 100);
			ah = number("--aspect", colon + 1, 1, 100);
		}
		else if (strcmp(argv[i], "--fit") == 0)
		{
			fit = argv[i + 1];
			if (strcmp(fit, "crop") != 0 && strcmp(fit, "pad") != 0)
				hc_fail(0, "--fit takes crop or pad, not \"%s\"", fit);
		}
		else if (strcmp(argv[i], "--max-side") == 0)
			max_side = number("--max-side", argv[i + 1], 16, 8192);
		else if (strcmp(argv[i], "--min-side") == 0)
			min_side = number("--min-side", argv[i + 1], 2, 4096);
		else if (strcmp(argv[i], "--max-bytes") == 0)
			max_bytes = number("--max-bytes", argv[i + 1], 1024, 1024L * 1024 * 1024);
		else
			hc_fail(0, "unknown option \"%s\"; %s", argv[i], usage);
	}
	if (aw == 0)
		hc_fail(0, "--aspect is required; %s", usage);
	if (min_side > max_side)
		hc_fail(0, "--min-side (%ld) is larger than --max-side (%ld)", min_side, max_side);
	ratio = (double) aw / ah;
	snprintf(aspect, sizeof(aspect), "%ld:%ld", aw, ah);

	/* The photo, decoded and upright. */
	ic = open_photo(in);
	v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);
	if (v < 0)
		hc_fail(0, "the photo has no picture");
	st = ic->streams[v];
	if (st->codecpar->width <= 0 || st->codecpar->height <= 0)
		hc_fail(0, "the photo cannot be read (%s): damaged or cut short",
				strrchr(in, '/') ? strrchr(in, '/') + 1 : in);
	if ((int64_t) st->codecpar->width * st->codecpar->height > HC_MAX_PIXELS)
		hc_fail(0, "the photo is %dx%d pixels; at most %d million are taken", st->codecpar->width,
				st->codecpar->height, HC_MAX_PIXELS / 1000000);
	dec = hc_open_decoder(st, 0, "the photo", 1);
	pkt = av_packet_alloc();
	frame = av_frame_alloc();
	rc = AVERROR(EAGAIN);
	while (rc == AVERROR(EAGAIN) && av_read_frame(ic, pkt) >= 0)
	{
		if (pkt->stream_index == v && avcodec_send_packet(dec, pkt) >= 0)
			rc = avcodec_receive_frame(dec, frame);
		av_packet_unref(pkt);
	}
	if (rc == AVERROR(EAGAIN) && avcodec_send_packet(dec, NULL) >= 0)
		rc = avcodec_receive_frame(dec, frame);
	if (rc < 0)
		hc_fail(0, "the photo cannot be decoded: %s", hc_err(rc));
	src_w = frame->width;
	src_h = frame->height;
	o = orientation_of(frame, st);
	/* Upright already (the usual case): it is scaled straight from the
	 * decoded picture, as the ffmpeg CLI would.  Otherwise it is turned in
	 * RGB first. */
	photo.w = o >= 5 ? src_h : src_w;
	photo.h = o >= 5 ? src_w : src_h;
	photo.px = NULL;
	if (o != 1)
	{
		photo = rgb_alloc(src_w, src_h);
		scale_frame_into(frame, photo, 0, 0, src_w, src_h);
		photo = orient(photo, o);
	}

	/* The part of it shown (crop) or the canvas it lies on (pad), in the
	 * photo's pixels, of the project's shape. */
	if (strcmp(fit, "crop") == 0)
	{
		if ((double) photo.w / photo.h > ratio)
		{
			ch = photo.h;
			cw = (int) lrint(photo.h * ratio);
		}
		else
		{
			cw = photo.w;
			ch = (int) lrint(photo.w / ratio);
		}
	}
	else if ((double) photo.w / photo.h > ratio)
	{
		cw = photo.w;
		ch = (int) lrint(photo.w / ratio);
	}
	else
	{
		ch = photo.h;
		cw = (int) lrint(photo.h * ratio);
	}
	cw = cw < 1 ? 1 : cw;
	ch = ch < 1 ? 1 : ch;
	/* Its size out: the longer side at most max_side, the shorter at least
	 * min_side (when max_side allows), never enlarged otherwise. */
	s = fmin(1.0, (double) max_side / (cw > ch ? cw : ch));
	if ((cw < ch ? cw : ch) * s < min_side)
		s = fmin((double) min_side / (cw < ch ? cw : ch), (double) max_side / (cw > ch ? cw : ch));
	if (aw >= ah)
	{
		oh = even(ch * s);
		ow = even(oh * ratio);
	}
	else
	{
		ow = even(cw * s);
		oh = even(ow / ratio);
	}
	pic = rgb_alloc(ow, oh);	/* calloc: black */
	if (strcmp(fit, "crop") == 0 && photo.px == NULL)
	{
		frame->crop_left = (photo.w - cw) / 2;
		frame->crop_top = (photo.h - ch) / 2;
		frame->crop_right = photo.w - cw - frame->crop_left;
		frame->crop_bottom = photo.h - ch - frame->crop_top;
		if ((rc = av_frame_apply_cropping(frame, AV_FRAME_CROP_UNALIGNED)) < 0)
			hc_fail(0, "the photo cannot be cropped: %s", hc_err(rc));
		scale_frame_into(frame, pic, 0, 0, ow, oh);
	}
	else if (strcmp(fit, "crop") == 0)
		scale_into(photo, (photo.w - cw) / 2, (photo.h - ch) / 2, cw, ch, pic, 0, 0, ow, oh);
	else
	{
		/* The whole photo, as large as fits, in the middle. */
		double		k = fmin((double) ow / photo.w, (double) oh / photo.h);
		int			pw = (int) lrint(photo.w * k),
					ph = (int) lrint(photo.h * k);

		pw = pw < 1 ? 1 : (pw > ow ? ow : pw);
		ph = ph < 1 ? 1 : (ph > oh ? oh : ph);
		if (photo.px == NULL)
			scale_frame_into(frame, pic, (ow - pw) / 2, (oh - ph) / 2, pw, ph);
		else
			scale_into(photo, 0, 0, photo.w, photo.h, pic, (ow - pw) / 2, (oh - ph) / 2, pw, ph);
	}

	/* The JPEG: the best quality that fits in max_bytes. */
	hc_remove_on_failure(out);
	for (q = 2;; q += 3)
	{
		AVPacket   *jpeg = encode_jpeg(pic, q > 31 ? 31 : q, &err);

		if (jpeg == NULL)
			hc_fail(0, "%s", err);
		if (jpeg->size <= max_bytes || q >= 31)
		{
			if (jpeg->size > max_bytes)
				hc_fail(0, "the photo is %d bytes as a JPEG of %dx%d even at the lowest quality; at most %ld are taken",
						jpeg->size, ow, oh, max_bytes);
			if (!(f = fopen(out, "wb")) || fwrite(jpeg->data, 1, jpeg->size, f) != (size_t) jpeg->size ||
				fclose(f) != 0)
				hc_fail(0, "%s cannot be written: %s", out, strerror(errno));
			hc_emit(json_pack("{s:{s:o,s:i,s:i,s:i,s:i,s:s,s:s,s:{s:i,s:i,s:i,s:s}}}", hc_image_line_key,
							  "file", hc_json_text(out), "width", ow, "height", oh,
							  "bytes", jpeg->size, "quality", q > 31 ? 31 : q,
							  "fit", fit, "aspect", aspect,
							  "source", "width", src_w, "height", src_h, "orientation", o,
							  "format", ic->iformat->name));
			av_packet_free(&jpeg);
			break;
		}
		av_packet_free(&jpeg);
	}
	free(pic.px);
	free(photo.px);			/* NULL when it was not turned */
	av_frame_free(&frame);
	av_packet_free(&pkt);
	avcodec_free_context(&dec);
	avformat_close_input(&ic);
	return 0;
}

/*
 * hc_image_manifest: the same work asked for by a manifest, so that a
 * compile worker on any host runs it like a compile (`hagen-compile compile
 * MANIFEST`): {"image": {"input", "output", "aspect", "fit", "max_side",
 * "min_side", "max_bytes"}}.  Reports a "result" line.
 */
int
hc_image_manifest(json_t *root)
{
	json_t	   *m = json_object_get(root, "image");
	char	   *argv[12];
	char		nums[3][32];
	int			argc = 0;
	const char *in = json_string_value(json_object_get(m, "input"));
	const char *out = json_string_value(json_object_get(m, "output"));
	const char *aspect = json_string_value(json_object_get(m, "aspect"));
	const char *fit = json_string_value(json_object_get(m, "fit"));
	static const char *const limits[] = {"max_side", "min_side", "max_bytes"};
	static const char *const options[] = {"--max-side", "--min-side", "--max-bytes"};

	if (!json_is_object(m) || in == NULL || out == NULL || aspect == NULL || fit == NULL)
		hc_fail(0, "the manifest's \"image\" must be an object with \"input\", \"output\", \"aspect\" and \"fit\" strings");
	argv[argc++] = (char *) in;
	argv[argc++] = (char *) out;
	argv[argc++] = "--aspect";
	argv[argc++] = (char *) aspect;
	argv[argc++] = "--fit";
	argv[argc++] = (char *) fit;
	for (int i = 0; i < 3; i++)
	{
		json_t	   *v = json_object_get(m, limits[i]);

		if (v == NULL || json_is_null(v))
			continue;
		if (!json_is_integer(v))
			hc_fail(0, "the manifest's \"%s\" in \"image\" must be an integer", limits[i]);
		snprintf(nums[i], sizeof(nums[i]), "%lld", (long long) json_integer_value(v));
		argv[argc++] = (char *) options[i];
		argv[argc++] = nums[i];
	}
	hc_image_line_key = "result";
	return hc_image_main(argc, argv);
}
