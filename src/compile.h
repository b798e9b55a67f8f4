/*-------------------------------------------------------------------------
 *
 * compile.h
 *	  Carrying out a compile effect: gather inputs, run hagen-compile as a
 *	  child process under limits, store the results.
 *
 * IDENTIFICATION
 *	  src/compile.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HAGEN_COMPILE_H
#define HAGEN_COMPILE_H

#include "hagenkit.h"

extern char *hagen_compile_run(int64 job_id, int64 token, Jsonb *effect);

#endif							/* HAGEN_COMPILE_H */
