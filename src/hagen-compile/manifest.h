/*
 * manifest.h: what `hagen-compile compile` is asked to make (manifest.c).
 */
#ifndef HAGEN_COMPILE_MANIFEST_H
#define HAGEN_COMPILE_MANIFEST_H

#include "hc.h"

typedef struct Manifest
{
	int			nsegs;
	SegInfo    *segs;
	const char *music_file;		/* NULL: no music */
	double		music_volume;
	double		video_volume;
	int			aspect_w;		/* 16:9, 9:16 or 1:1 */
	int			aspect_h;
	const char *output;
	const char *thumbnail;		/* NULL: none wanted */
	bool		force_normalize;
	bool		any_crossfade;	/* a segment fades in: the video is re-encoded */
} Manifest;

#define HC_MAX_SEGMENTS 1000

extern void manifest_read(const char *path, Manifest *m);

#endif
