/*
 * probe.c: `hagen-compile probe FILE [--decode]`: what a media file holds,
 * as JSON; with --decode, counted by decoding every frame.
 */
#include "hc.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <libavutil/pixdesc.h>

/* Whether the MP4 index (moov) comes before the media (mdat): -1 when the
 * file has neither at its top level. */
static int
moov_first(const char *path)
{
	FILE	   *f = fopen(path, "rb");
	unsigned char h[16];
	int			result = -1;

	if (!f)
		return -1;
	for (int atoms = 0; atoms < 1000 && fread(h, 1, 8, f) == 8; atoms++)
	{
		uint64_t	size = ((uint64_t) h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3];
		uint64_t	header = 8;

		if (memcmp(h + 4, "moov", 4) == 0)
		{
			result = 1;
			break;
		}
		if (memcmp(h + 4, "mdat", 4) == 0)
		{
			result = 0;
			break;
		}
		if (size == 1)
		{
			if (fread(h + 8, 1, 8, f) != 8)
				break;
			size = 0;
			for (int i = 8; i < 16; i++)
				size = (size << 8) | h[i];
			header = 16;
		}
		if (size < header || fseeko(f, (off_t) (size - header), SEEK_CUR) != 0)
			break;
	}
	fclose(f);
	return result;
}

static void
decode_counts(AVFormatContext *ic, json_t *out)
{
	int			v = hc_stream(ic, AVMEDIA_TYPE_VIDEO);
	int			a = hc_stream(ic, AVMEDIA_TYPE_AUDIO);
	AVCodecContext *vd = v >= 0 ? hc_open_decoder(ic->streams[v], 0, "the video", 0) : NULL;
	AVCodecContext *ad = a >= 0 ? hc_open_decoder(ic->streams[a], 0, "the audio", 1) : NULL;
	AVPacket   *pkt = av_packet_alloc();
	AVFrame    *frame = av_frame_alloc();
	int64_t		frames = 0,
				samples = 0,
				vend = AV_NOPTS_VALUE,
				aend = AV_NOPTS_VALUE;
	int			rc;
	bool		eof = false;

	while (!eof)
	{
		rc = av_read_frame(ic, pkt);
		eof = rc < 0;
		for (int k = 0; k < 2; k++)
		{
			AVCodecContext *d = k == 0 ? vd : ad;
			int			idx = k == 0 ? v : a;

			if (!d || (!eof && pkt->stream_index != idx))
				continue;
			avcodec_send_packet(d, eof ? NULL : pkt);
			while (avcodec_receive_frame(d, frame) >= 0)
			{
				int64_t		ts = frame->best_effort_timestamp;
				AVRational	tb = ic->streams[idx]->time_base;

				if (k == 0)
				{
					frames++;
					if (ts != AV_NOPTS_VALUE)
						vend = FFMAX(vend, ts + (frame->pkt_duration > 0 ? frame->pkt_duration : 0));
				}
				else
				{
					samples += frame->nb_samples;
					if (ts != AV_NOPTS_VALUE)
						aend = FFMAX(aend, ts + av_rescale_q(frame->nb_samples,
															 (AVRational) {1, frame->sample_rate}, tb));
				}
				av_frame_unref(frame);
			}
		}
		av_packet_unref(pkt);
	}
	json_object_set_new(out, "decoded",
						json_pack("{s:I,s:f,s:I,s:f}", "video_frames", (json_int_t) frames,
								  "video_end", vend == AV_NOPTS_VALUE ? 0 : vend * av_q2d(ic->streams[v]->time_base),
								  "audio_samples", (json_int_t) samples,
								  "audio_end", aend == AV_NOPTS_VALUE ? 0 : aend * av_q2d(ic->streams[a]->time_base)));
}

int
hc_probe_main(int argc, char **argv)
{
	AVFormatContext *ic;
	json_t	   *out;
	struct stat sb;
	int			ff;
	bool		decode = argc == 2 && strcmp(argv[1], "--decode") == 0;

	if (argc < 1 || argc > 2 || (argc == 2 && !decode))
		hc_fail(0, "usage: hagen-compile probe FILE [--decode]");
	ic = hc_open_input(argv[0], HC_PROBE_FORMATS, 0, "the file");
	ff = strstr(ic->iformat->name, "mp4") ? moov_first(argv[0]) : -1;
	stat(argv[0], &sb);
	out = json_pack("{s:o,s:s,s:f,s:I,s:o,s:[]}", "file", hc_json_text(argv[0]),
					"format", ic->iformat->name,
					"duration", ic->duration > 0 ? ic->duration / (double) AV_TIME_BASE : 0,
					"size", (json_int_t) sb.st_size,
					"faststart", ff < 0 ? json_null() : json_boolean(ff), "streams");
	for (unsigned i = 0; i < ic->nb_streams; i++)
	{
		AVStream   *st = ic->streams[i];
		AVCodecParameters *p = st->codecpar;
		const char *profile = avcodec_profile_name(p->codec_id, p->profile);
		const char *type = av_get_media_type_string(p->codec_type);
		char		tb_text[32];
		json_t	   *s = json_pack("{s:I,s:s,s:s}", "index", (json_int_t) i, "type", type ? type : "unknown",
								  "codec", avcodec_get_name(p->codec_id));

		if (profile)
			json_object_set_new(s, "profile", json_string(profile));
		if (p->codec_type == AVMEDIA_TYPE_VIDEO)
		{
			AVRational	sar = p->sample_aspect_ratio.num > 0 ? p->sample_aspect_ratio : (AVRational) {1, 1};
			const char *pix = av_get_pix_fmt_name(p->format);
			char		sar_text[32];

			snprintf(sar_text, sizeof(sar_text), "%d:%d", sar.num, sar.den);
			json_object_update_new(s, json_pack("{s:i,s:i,s:s,s:f,s:s}", "width", p->width,
												"height", p->height, "sar", sar_text,
												"fps", av_q2d(hc_stream_fps(st)),
												"pix_fmt", pix ? pix : "unknown"));
		}
		else if (p->codec_type == AVMEDIA_TYPE_AUDIO)
			json_object_update_new(s, json_pack("{s:i,s:i}", "sample_rate", p->sample_rate,
												"channels", p->ch_layout.nb_channels));
		snprintf(tb_text, sizeof(tb_text), "%d/%d", st->time_base.num, st->time_base.den);
		json_object_update_new(s, json_pack("{s:s,s:f,s:I}", "time_base", tb_text,
											"duration", st->duration > 0 ? st->duration * av_q2d(st->time_base) : 0,
											"frames", (json_int_t) st->nb_frames));
		json_array_append_new(json_object_get(out, "streams"), s);
	}
	if (decode)
		decode_counts(ic, out);
	hc_emit(out);
	avformat_close_input(&ic);
	return 0;
}
