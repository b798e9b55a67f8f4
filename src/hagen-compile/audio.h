/*
 * audio.h: the audio of the final video.  Every segment's audio is decoded,
 * resampled to 48 kHz stereo, placed on the segment's own timeline (silence
 * where it has none, trimmed where it runs past the segment's video), scaled
 * by the video volume, mixed with the music and encoded once.  Because the
 * output is counted in samples against the video's end at every segment
 * boundary, nothing drifts however many segments there are.
 *
 * A crossfade: the segment's audio that runs under the video frames held
 * back for the fade is kept as the tail, and blended linearly into the first
 * samples of the next segment (the same length as the video's fade).
 */
#ifndef HAGEN_COMPILE_AUDIO_H
#define HAGEN_COMPILE_AUDIO_H

#include "hc.h"

#include <libavutil/audio_fifo.h>
#include <libswresample/swresample.h>

typedef struct Music Music;

typedef struct AudioOut
{
	AVFormatContext *oc;
	AVStream   *st;
	AVCodecContext *enc;
	AVAudioFifo *fifo;			/* mixed samples waiting for a whole frame */
	AVFrame    *frame;
	AVPacket   *pkt;
	int64_t		emitted;		/* samples mixed: the output's audio timeline */
	int64_t		encoded;		/* samples handed to the encoder */
	double		video_volume;
	double		music_volume;
	Music	   *music;
	int64_t		fade_start;		/* music fade-out, in samples */
	int64_t		fade_len;
	float	   *buf[HC_CHANNELS];	/* scratch for one chunk */
	float	   *mbuf[HC_CHANNELS];
	int			bufcap;
	float	   *tail[HC_CHANNELS];	/* the previous segment's fading audio */
	int64_t		tail_len;
	int64_t		tail_pos;		/* samples of it blended so far */
	int64_t		tail_cap;
} AudioOut;

/* One segment's audio on its way to the mix. */
typedef struct ClipAudio
{
	AVCodecContext *dec;		/* NULL: the segment has no audio */
	SwrContext *swr;
	AVAudioFifo *fifo;
	AVFrame    *frame;
	AVRational	tb;
	double		start;			/* the segment's video start, seconds */
	bool		started;
	double		next_pos;		/* where the next frame should start, samples */
	int64_t		drop;			/* samples before the video start, to discard */
	int64_t		emitted;		/* samples of this segment mixed */
	int			segment;
	char		what[300];
} ClipAudio;

extern AudioOut *audio_out_create(AVFormatContext *oc, const char *music_file, double music_volume,
								  double video_volume, double total_seconds);
extern void audio_out_finish(AudioOut *ao);

extern void clip_audio_open(ClipAudio *ca, AVStream *st, double start, int segment, const char *what);
extern void clip_audio_packet(ClipAudio *ca, AVPacket *pkt);
extern void clip_audio_flush(ClipAudio *ca);
extern void clip_audio_close(ClipAudio *ca);

/* Mixes up to n more samples of the segment; with pad, exactly n (silence
 * after the segment's own audio). */
extern void audio_mix(AudioOut *ao, ClipAudio *ca, int64_t n, bool pad);

/* Keeps the segment's next n samples (silence past its own audio) to fade
 * into the next segment's first n. */
extern void audio_hold_tail(AudioOut *ao, ClipAudio *ca, int64_t n);

#endif
