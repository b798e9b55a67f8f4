/*-------------------------------------------------------------------------
 *
 * supervise.h
 *	  Running hagen-compile as a child process bound to its worker.
 *
 * IDENTIFICATION
 *	  src/supervise.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HAGEN_SUPERVISE_H
#define HAGEN_SUPERVISE_H

#include "hagenkit.h"

/*
 * Called with each line the helper prints (without its newline), and at
 * least every tick_ms with line NULL.  Returns NULL to go on, or why the
 * helper must be stopped (it is then killed and the reason reported).
 */
typedef const char *(*HagenLineFn) (const char *line, void *arg);

typedef struct HagenHelperRun
{
	/* in */
	char	  **argv;			/* argv[0]: the executable */
	const char *log_path;		/* its stderr goes there */
	int			timeout_s;		/* wall-clock and CPU-time limit */
	long		tick_ms;
	HagenLineFn on_line;
	void	   *arg;
	/* out */
	int			wstatus;		/* as from waitpid */
	const char *stopped;		/* why it was killed, or NULL */
} HagenHelperRun;

extern void hagen_helper_run(HagenHelperRun *run);

#endif							/* HAGEN_SUPERVISE_H */
