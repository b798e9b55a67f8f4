/*
 * manifest.h: what `hagen-compile compile` is asked to make (manifest.c).
 *
 * A manifest's "task" says which part of a compile it is:
 *   compile  the whole video in one run (the default)
 *   plan     probe every segment and report the mode, the target size and
 *            frame rate and each fade in frames; no output
 *   chunk    re-encode some consecutive segments, video only, to the target
 *            and fades a plan gave (a compile split across workers)
 *   join     the chunks' videos stream-copied one after another, the audio of
 *            every segment placed, mixed and encoded once over the whole
 *            timeline: the file a single compile makes
 */
#ifndef HAGEN_COMPILE_MANIFEST_H
#define HAGEN_COMPILE_MANIFEST_H

#include "hc.h"

typedef enum
{
	TASK_COMPILE, TASK_PLAN, TASK_CHUNK, TASK_JOIN
} Task;

/* A chunk's video, as a join reads it. */
typedef struct ChunkRef
{
	const char *file;
	int			first;			/* its segments, 1-based */
	int			last;
} ChunkRef;

typedef struct Manifest
{
	Task		task;
	int			nsegs;
	SegInfo    *segs;
	const char *music_file;		/* NULL: no music */
	double		music_volume;
	double		video_volume;
	int			aspect_w;		/* 16:9, 9:16 or 1:1 */
	int			aspect_h;
	const char *output;			/* NULL only for a plan */
	const char *thumbnail;		/* NULL: none wanted */
	bool		force_normalize;
	bool		any_crossfade;	/* a segment fades in: the video is re-encoded */
	int			threads;		/* of the video decoders and the encoder; 0: one per core */
	bool		has_target;		/* chunk and join: the plan's target */
	int			target_w;
	int			target_h;
	AVRational	target_fps;
	int			nchunks;		/* join */
	ChunkRef   *chunks;
} Manifest;

#define HC_MAX_SEGMENTS 1000
#define HC_MAX_THREADS 64

extern void manifest_read(const char *path, Manifest *m);

#endif
