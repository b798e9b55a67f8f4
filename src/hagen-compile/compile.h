/*
 * compile.h: what the tasks of `hagen-compile compile` share (compile.c):
 * the probe and the choice of mode, the plan of a re-encode (target size,
 * frame rate, fades), the output file with its index at the front, the
 * thumbnail and the result line.  chunk.c and join.c are a re-encode split
 * across workers; compile.c also holds the whole compile in one run.
 */
#ifndef HAGEN_COMPILE_COMPILE_H
#define HAGEN_COMPILE_COMPILE_H

#include "audio.h"
#include "manifest.h"
#include "normalize.h"

typedef enum
{
	MODE_COPY, MODE_COPY_VIDEO, MODE_NORMALIZE
} Mode;

extern const char *const hc_mode_names[];

typedef struct Compile
{
	Manifest	m;
	const char *manifest_path;
	Mode		mode;
	bool		copy_audio;		/* copy mode passing one segment's audio through */
	AVFormatContext *oc;
	AVStream   *vst;			/* copy modes and join: the output video stream */
	VideoEnc   *ve;				/* normalize mode */
	AudioOut   *ao;				/* NULL: no audio is mixed */
	AVStream   *ast_copy;		/* copy_audio: the output audio stream */
	int64_t		offset;			/* copy modes: video end so far, output time base */
	int64_t		last_dts;
	double	   *starts;			/* each segment's start, seconds */
	double	   *durations;
	double		total_estimate;
	bool		faststart;		/* rewrite the file to move the index (slower) */
	double		last_progress;
	int			max_fade;		/* the longest crossfade, frames */
	AVRational	fps;			/* normalize and join: the output frame rate */
	int			width;			/* normalize and join: the output size */
	int			height;
} Compile;

/* Reads the manifest, probes every segment (chunk: those listed). */
extern void compile_begin(Compile *c, const char *manifest_path, bool faststart);
extern void compile_choose_mode(Compile *c);
/* The target of a re-encode: the manifest's, or the one the segments call
 * for; then the fades in frames. */
extern void compile_plan(Compile *c);
extern void compile_progress(Compile *c, int seg, double within);
/* Opens the output for writing (its streams added before). */
extern void compile_open_output(Compile *c);
/* Writes the index, the thumbnail and the result line. */
extern void compile_finish(Compile *c, json_t *extra);

extern int	hc_chunk(Compile *c);
extern int	hc_join(Compile *c);

#endif
