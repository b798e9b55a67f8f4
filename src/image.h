/*-------------------------------------------------------------------------
 *
 * image.h
 *	  Carrying out an image effect: a photo fitted to a project's aspect
 *	  ratio by hagen-compile, run as a child process under limits.
 *
 * IDENTIFICATION
 *	  src/image.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HAGEN_IMAGE_H
#define HAGEN_IMAGE_H

#include "hagenkit.h"

extern char *hagen_image_run(int64 job_id, int64 token, Jsonb *effect);

#endif							/* HAGEN_IMAGE_H */
