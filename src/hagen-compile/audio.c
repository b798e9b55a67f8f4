/*
 * audio.c: decode, place, mix and encode the audio of the final video.
 */
#include "audio.h"

#include <math.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>

#define HC_GAP_FILL (HC_RATE / 50)	/* holes longer than 20 ms are filled */
#define HC_FADE_SECONDS 2.0

struct Music
{
	AVFormatContext *ic;
	int			idx;
	AVCodecContext *dec;
	SwrContext *swr;
	AVAudioFifo *fifo;
	AVPacket   *pkt;
	AVFrame    *frame;
	bool		eof;
	int64_t		pass_samples;	/* samples this pass over the file gave */
};

static AVChannelLayout stereo = AV_CHANNEL_LAYOUT_STEREO;

static SwrContext *
make_swr(AVCodecContext *dec, int segment, const char *what)
{
	SwrContext *swr = NULL;
	AVChannelLayout in = {0};
	int			rc;

	if (dec->ch_layout.order == AV_CHANNEL_ORDER_UNSPEC || !av_channel_layout_check(&dec->ch_layout))
		av_channel_layout_default(&in, dec->ch_layout.nb_channels);
	else
		av_channel_layout_copy(&in, &dec->ch_layout);
	rc = swr_alloc_set_opts2(&swr, &stereo, AV_SAMPLE_FMT_FLTP, HC_RATE,
							 &in, dec->sample_fmt, dec->sample_rate, 0, NULL);
	if (rc >= 0)
		rc = swr_init(swr);
	av_channel_layout_uninit(&in);
	if (rc < 0)
		hc_fail(segment, "%s: its audio (%d Hz, %d channels) cannot be resampled: %s", what,
				dec->sample_rate, dec->ch_layout.nb_channels, hc_err(rc));
	return swr;
}

static AVAudioFifo *
make_fifo(void)
{
	AVAudioFifo *f = av_audio_fifo_alloc(AV_SAMPLE_FMT_FLTP, HC_CHANNELS, 4096);

	if (!f)
		hc_fail(0, "out of memory");
	return f;
}

static void
fifo_silence(AVAudioFifo *fifo, int64_t n)
{
	static float zeros[4096];
	void	   *planes[HC_CHANNELS] = {zeros, zeros};

	while (n > 0)
	{
		int			k = n > 4096 ? 4096 : (int) n;

		if (av_audio_fifo_write(fifo, planes, k) < k)
			hc_fail(0, "out of memory");
		n -= k;
	}
}

/* Converts a decoded frame (or, with NULL, the resampler's tail) into the
 * fifo, first discarding *drop samples. */
static void
convert_into(SwrContext *swr, AVFrame *in, AVAudioFifo *fifo, int64_t *drop)
{
	uint8_t    *out[HC_CHANNELS];
	int			max = swr_get_out_samples(swr, in ? in->nb_samples : 0);
	int			n;

	if (max <= 0)
		return;
	if (av_samples_alloc(out, NULL, HC_CHANNELS, max, AV_SAMPLE_FMT_FLTP, 0) < 0)
		hc_fail(0, "out of memory");
	n = swr_convert(swr, out, max, in ? (const uint8_t **) in->extended_data : NULL,
					in ? in->nb_samples : 0);
	if (n > 0)
	{
		int			skip = 0;

		if (drop && *drop > 0)
		{
			skip = *drop < n ? (int) *drop : n;
			*drop -= skip;
		}
		if (n > skip)
		{
			void	   *planes[HC_CHANNELS] = {
				(float *) out[0] + skip, (float *) out[1] + skip
			};

			if (av_audio_fifo_write(fifo, planes, n - skip) < n - skip)
				hc_fail(0, "out of memory");
		}
	}
	av_freep(&out[0]);
}

/* ---- music ---- */

static Music *
music_open(const char *file)
{
	Music	   *m = hc_alloc(sizeof(Music));

	m->ic = hc_open_input(file, HC_MUSIC_FORMATS, 0, "the music track");
	m->idx = hc_stream(m->ic, AVMEDIA_TYPE_AUDIO);
	if (m->idx < 0)
		hc_fail(0, "the music track has no audio stream (%s)", file);
	m->dec = hc_open_decoder(m->ic->streams[m->idx], 0, "the music track", 1);
	m->swr = make_swr(m->dec, 0, "the music track");
	m->fifo = make_fifo();
	m->pkt = av_packet_alloc();
	m->frame = av_frame_alloc();
	return m;
}

static void
music_receive(Music *m)
{
	while (avcodec_receive_frame(m->dec, m->frame) >= 0)
	{
		int			before = av_audio_fifo_size(m->fifo);

		convert_into(m->swr, m->frame, m->fifo, NULL);
		m->pass_samples += av_audio_fifo_size(m->fifo) - before;
		av_frame_unref(m->frame);
	}
}

/* Reads n samples of music, starting over at its end. */
static void
music_read(Music *m, float **dst, int n)
{
	while (av_audio_fifo_size(m->fifo) < n)
	{
		int			rc = av_read_frame(m->ic, m->pkt);

		if (rc >= 0)
		{
			if (m->pkt->stream_index == m->idx)
			{
				/* A damaged packet in a music file is skipped, not fatal. */
				if (avcodec_send_packet(m->dec, m->pkt) >= 0)
					music_receive(m);
			}
			av_packet_unref(m->pkt);
			continue;
		}
		if (rc != AVERROR_EOF)
			hc_fail(0, "the music track cannot be read: %s", hc_err(rc));
		/* End of the music: drain, then loop from the start. */
		avcodec_send_packet(m->dec, NULL);
		music_receive(m);
		convert_into(m->swr, NULL, m->fifo, NULL);
		if (m->pass_samples == 0)
		{
			/* Nothing decodable at all: the music is silence. */
			fifo_silence(m->fifo, n - av_audio_fifo_size(m->fifo));
			break;
		}
		m->pass_samples = 0;
		avcodec_flush_buffers(m->dec);
		if ((rc = avformat_seek_file(m->ic, -1, INT64_MIN, 0, 0, 0)) < 0)
			hc_fail(0, "the music track cannot be looped (seek failed: %s)", hc_err(rc));
	}
	av_audio_fifo_read(m->fifo, (void **) dst, n);
}

/* ---- the output ---- */

AudioOut *
audio_out_create(AVFormatContext *oc, const char *music_file, double music_volume,
				 double video_volume, double total_seconds)
{
	AudioOut   *ao = hc_alloc(sizeof(AudioOut));
	const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_AAC);
	int			rc;

	if (!codec)
		hc_fail(0, "this FFmpeg build has no AAC encoder");
	ao->oc = oc;
	ao->enc = avcodec_alloc_context3(codec);
	ao->enc->sample_fmt = AV_SAMPLE_FMT_FLTP;
	ao->enc->sample_rate = HC_RATE;
	av_channel_layout_copy(&ao->enc->ch_layout, &stereo);
	ao->enc->bit_rate = 192000;
	ao->enc->time_base = (AVRational) {1, HC_RATE};
	if (oc->oformat->flags & AVFMT_GLOBALHEADER)
		ao->enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
	if ((rc = avcodec_open2(ao->enc, codec, NULL)) < 0)
		hc_fail(0, "the AAC encoder cannot be opened: %s", hc_err(rc));
	ao->st = avformat_new_stream(oc, NULL);
	if (!ao->st)
		hc_fail(0, "out of memory");
	avcodec_parameters_from_context(ao->st->codecpar, ao->enc);
	ao->st->time_base = ao->enc->time_base;
	ao->fifo = make_fifo();
	ao->frame = av_frame_alloc();
	ao->pkt = av_packet_alloc();
	ao->video_volume = video_volume;
	ao->music_volume = music_volume;
	if (music_file)
		ao->music = music_open(music_file);
	ao->fade_len = (int64_t) (fmin(HC_FADE_SECONDS, total_seconds / 4) * HC_RATE);
	ao->fade_start = (int64_t) llround(total_seconds * HC_RATE) - ao->fade_len;
	return ao;
}

static void
write_packets(AudioOut *ao)
{
	int			rc;

	while ((rc = avcodec_receive_packet(ao->enc, ao->pkt)) >= 0)
	{
		av_packet_rescale_ts(ao->pkt, ao->enc->time_base, ao->st->time_base);
		ao->pkt->stream_index = ao->st->index;
		if ((rc = av_interleaved_write_frame(ao->oc, ao->pkt)) < 0)
			hc_fail(0, "writing the audio failed: %s", hc_err(rc));
	}
	if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF)
		hc_fail(0, "the AAC encoder failed: %s", hc_err(rc));
}

static void
encode_frames(AudioOut *ao, bool last)
{
	int			fs = ao->enc->frame_size;

	while (av_audio_fifo_size(ao->fifo) >= fs || (last && av_audio_fifo_size(ao->fifo) > 0))
	{
		int			n = FFMIN(fs, av_audio_fifo_size(ao->fifo));
		int			rc;

		av_frame_unref(ao->frame);
		ao->frame->nb_samples = n;
		ao->frame->format = AV_SAMPLE_FMT_FLTP;
		ao->frame->sample_rate = HC_RATE;
		av_channel_layout_copy(&ao->frame->ch_layout, &stereo);
		if (av_frame_get_buffer(ao->frame, 0) < 0)
			hc_fail(0, "out of memory");
		av_audio_fifo_read(ao->fifo, (void **) ao->frame->data, n);
		ao->frame->pts = ao->encoded;
		ao->encoded += n;
		if ((rc = avcodec_send_frame(ao->enc, ao->frame)) < 0)
			hc_fail(0, "the AAC encoder failed: %s", hc_err(rc));
		write_packets(ao);
	}
}

static void
ensure_buffers(AudioOut *ao, int n)
{
	if (n <= ao->bufcap)
		return;
	for (int c = 0; c < HC_CHANNELS; c++)
	{
		av_free(ao->buf[c]);
		av_free(ao->mbuf[c]);
		ao->buf[c] = av_malloc(n * sizeof(float));
		ao->mbuf[c] = av_malloc(n * sizeof(float));
		if (!ao->buf[c] || !ao->mbuf[c])
			hc_fail(0, "out of memory");
	}
	ao->bufcap = n;
}

static void
mix_chunk(AudioOut *ao, ClipAudio *ca, int n, int from_clip)
{
	ensure_buffers(ao, n);
	if (from_clip > 0)
		av_audio_fifo_read(ca->fifo, (void **) ao->buf, from_clip);
	for (int c = 0; c < HC_CHANNELS; c++)
	{
		memset(ao->buf[c] + from_clip, 0, (n - from_clip) * sizeof(float));
		if (ao->video_volume != 1.0)
			for (int i = 0; i < from_clip; i++)
				ao->buf[c][i] *= (float) ao->video_volume;
	}
	for (int i = 0; i < n && ao->tail_pos < ao->tail_len; i++, ao->tail_pos++)
	{
		float		g = (float) ((ao->tail_pos + 0.5) / ao->tail_len);

		for (int c = 0; c < HC_CHANNELS; c++)
			ao->buf[c][i] = ao->buf[c][i] * g + ao->tail[c][ao->tail_pos] * (1.0f - g);
	}
	if (ao->music)
	{
		music_read(ao->music, ao->mbuf, n);
		for (int i = 0; i < n; i++)
		{
			int64_t		t = ao->emitted + i;
			double		g = ao->music_volume;

			if (t >= ao->fade_start && ao->fade_len > 0)
				g *= fmax(0.0, 1.0 - (double) (t - ao->fade_start) / ao->fade_len);
			for (int c = 0; c < HC_CHANNELS; c++)
				ao->buf[c][i] += (float) (g * ao->mbuf[c][i]);
		}
	}
	for (int c = 0; c < HC_CHANNELS; c++)
		for (int i = 0; i < n; i++)
			ao->buf[c][i] = fmaxf(-1.0f, fminf(1.0f, ao->buf[c][i]));
	if (av_audio_fifo_write(ao->fifo, (void **) ao->buf, n) < n)
		hc_fail(0, "out of memory");
	ao->emitted += n;
	encode_frames(ao, false);
}

void
audio_mix(AudioOut *ao, ClipAudio *ca, int64_t n, bool pad)
{
	while (n > 0)
	{
		int64_t		have = (ca && ca->fifo) ? av_audio_fifo_size(ca->fifo) : 0;
		int			chunk = n > 4096 ? 4096 : (int) n;
		int			from_clip = have < chunk ? (int) have : chunk;

		if (!pad)
		{
			if (from_clip == 0)
				return;
			chunk = from_clip;
		}
		mix_chunk(ao, ca, chunk, from_clip);
		if (ca)
			ca->emitted += chunk;
		n -= chunk;
	}
}

void
audio_hold_tail(AudioOut *ao, ClipAudio *ca, int64_t n)
{
	int64_t		have = ca->fifo ? FFMIN(av_audio_fifo_size(ca->fifo), n) : 0;

	if (n > ao->tail_cap)
	{
		for (int c = 0; c < HC_CHANNELS; c++)
		{
			av_free(ao->tail[c]);
			if (!(ao->tail[c] = av_malloc(n * sizeof(float))))
				hc_fail(0, "out of memory");
		}
		ao->tail_cap = n;
	}
	if (have > 0)
		av_audio_fifo_read(ca->fifo, (void **) ao->tail, (int) have);
	for (int c = 0; c < HC_CHANNELS; c++)
	{
		memset(ao->tail[c] + have, 0, (n - have) * sizeof(float));
		for (int64_t i = 0; i < have; i++)
			ao->tail[c][i] *= (float) ao->video_volume;
	}
	ao->tail_len = n;
	ao->tail_pos = 0;
}

void
audio_out_finish(AudioOut *ao)
{
	encode_frames(ao, true);
	avcodec_send_frame(ao->enc, NULL);
	write_packets(ao);
}

/* ---- one segment's audio ---- */

void
clip_audio_open(ClipAudio *ca, AVStream *st, double start, int segment, const char *what)
{
	memset(ca, 0, sizeof(*ca));
	ca->segment = segment;
	snprintf(ca->what, sizeof(ca->what), "%s", what);
	ca->fifo = make_fifo();
	ca->start = start;
	if (!st)
		return;
	ca->dec = hc_open_decoder(st, segment, what, 1);
	ca->swr = make_swr(ca->dec, segment, what);
	ca->tb = st->time_base;
	ca->frame = av_frame_alloc();
}

/* Places one decoded frame on the segment's timeline. */
static void
place_frame(ClipAudio *ca, AVFrame *f)
{
	int64_t		ts = f->best_effort_timestamp;
	double		pos = ts != AV_NOPTS_VALUE ? (ts * av_q2d(ca->tb) - ca->start) * HC_RATE : ca->next_pos;

	if (f->sample_rate <= 0 || f->nb_samples <= 0)
		return;
	if (!ca->started)
	{
		ca->started = true;
		if (pos > 0)
			fifo_silence(ca->fifo, llround(pos));
		else
			ca->drop = llround(-pos);
		ca->next_pos = pos;
	}
	else if (pos - ca->next_pos > HC_GAP_FILL)
	{
		/* A hole in the segment's audio: keep later sound in its place. */
		fifo_silence(ca->fifo, llround(pos - ca->next_pos));
		ca->next_pos = pos;
	}
	convert_into(ca->swr, f, ca->fifo, &ca->drop);
	ca->next_pos += (double) f->nb_samples * HC_RATE / f->sample_rate;
}

static void
receive_frames(ClipAudio *ca)
{
	int			rc;

	while ((rc = avcodec_receive_frame(ca->dec, ca->frame)) >= 0)
	{
		place_frame(ca, ca->frame);
		av_frame_unref(ca->frame);
	}
	if (rc != AVERROR(EAGAIN) && rc != AVERROR_EOF)
		hc_fail(ca->segment, "%s: its audio cannot be decoded: %s", ca->what, hc_err(rc));
}

void
clip_audio_packet(ClipAudio *ca, AVPacket *pkt)
{
	int			rc;

	if (!ca->dec)
		return;
	rc = avcodec_send_packet(ca->dec, pkt);
	/* Like a player, a damaged audio packet costs its few milliseconds
	 * (the placement fills the hole), not the video. */
	if (rc < 0 && rc != AVERROR_INVALIDDATA && rc != AVERROR(EAGAIN))
		hc_fail(ca->segment, "%s: its audio cannot be decoded: %s", ca->what, hc_err(rc));
	receive_frames(ca);
}

void
clip_audio_flush(ClipAudio *ca)
{
	if (!ca->dec)
		return;
	avcodec_send_packet(ca->dec, NULL);
	receive_frames(ca);
	convert_into(ca->swr, NULL, ca->fifo, &ca->drop);
}

void
clip_audio_close(ClipAudio *ca)
{
	avcodec_free_context(&ca->dec);
	swr_free(&ca->swr);
	av_audio_fifo_free(ca->fifo);
	av_frame_free(&ca->frame);
	ca->fifo = NULL;
}
