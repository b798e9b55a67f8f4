/*
 * hc.h: shared declarations of hagen-compile, the FFmpeg helper of
 * hagenkit.  It is a separate process on purpose: a crash or a runaway
 * allocation in a media library ends this process, never the database
 * server.  Errors are printed as one JSON line on stdout and exit 1.
 */
#ifndef HAGEN_COMPILE_HC_H
#define HAGEN_COMPILE_HC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdnoreturn.h>

#include <jansson.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

/* The sample format every audio path is converted to. */
#define HC_RATE 48000
#define HC_CHANNELS 2

/* Container formats accepted as segments, and as music. */
#define HC_VIDEO_FORMATS "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm"
#define HC_MUSIC_FORMATS "mp3,aac,mov,mp4,m4a,3gp,3g2,mj2,wav,ogg,flac,matroska,webm"
/* What probe looks at: the above and still images (thumbnails). */
#define HC_PROBE_FORMATS HC_MUSIC_FORMATS ",image2,jpeg_pipe,png_pipe,webp_pipe"

/* What the probe of one segment found; codec parameters are copies. */
typedef struct SegInfo
{
	int			index;			/* 1-based, as in error messages */
	const char *file;
	const char *label;
	const char *kind;
	AVCodecParameters *vpar;
	AVCodecParameters *apar;	/* NULL when the segment has no audio */
	AVRational	vtb;
	AVRational	fps;
	double		vdur;			/* seconds, from the container */
	double		crossfade;		/* seconds of fade from the previous segment; 0: a cut */
	int			fade_frames;	/* the fade in output frames, as planned (or as the
								 * manifest of a chunk or a join says) */
	int			frames;			/* join: the frames it gave, as its chunk counted
								 * them; -1: not given */
	int			held;			/* join: of those, how many were held back to fade
								 * into the next segment */
	bool		head;			/* chunk: only its first fade_frames frames are
								 * wanted, blended into the end of the chunk */
} SegInfo;

/* The longest crossfade a manifest may ask for, seconds. */
#define HC_MAX_CROSSFADE 2.0

/* The CPU time this run has used so far, user + system, seconds (emit.c):
 * every result reports it, so the cost of a compile or of a chunk is known
 * however busy the machine was. */
extern double hc_cpu_seconds(void);

/* Printing one JSON line on stdout and flushing it; takes the reference
 * (emit.c). */
extern void hc_emit(json_t *line);
/* text as a JSON string; bytes that are not UTF-8 become '?' (emit.c). */
extern json_t *hc_json_text(const char *text);

/* Error reporting (errors.c). */
extern noreturn void hc_fail(int segment, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern void hc_remove_on_failure(const char *path);
extern void hc_keep_files(void);
extern const char *hc_err(int averror);
extern void *hc_alloc(size_t size);

/* Opening and probing inputs (media.c). */
extern AVFormatContext *hc_open_input(const char *path, const char *formats, int segment,
									  const char *what);
extern int	hc_stream(AVFormatContext *ic, enum AVMediaType type);
extern void hc_probe_segment(SegInfo *seg);
extern AVRational hc_stream_fps(AVStream *st);
extern AVCodecContext *hc_open_decoder(AVStream *st, int segment, const char *what, int threads);

/* Subcommands. */
extern int	hc_probe_main(int argc, char **argv);
extern int	hc_frame_main(int argc, char **argv);
extern int	hc_compile_main(int argc, char **argv);
extern int	hc_image_main(int argc, char **argv);
extern int	hc_image_manifest(json_t *root);
extern int	hc_worker_main(int argc, char **argv);

/* Writes a JPEG of the frame at `at` seconds (or the last one when at < 0)
 * of file's video; with keyframe, of the keyframe at or before `at`, which
 * needs one frame decoded instead of a run of them.  Fills the frame's time
 * and size.  Returns NULL or an error message. */
extern const char *hc_frame_to_jpeg(const char *file, double at, bool keyframe, const char *out,
									double *time, int *width, int *height);

#endif
