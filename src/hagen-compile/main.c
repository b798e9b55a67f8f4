/*
 * main.c: hagen-compile, the FFmpeg helper of hagenkit.
 *
 *   hagen-compile probe FILE [--decode]
 *   hagen-compile compile MANIFEST.json
 *   hagen-compile frame FILE (--at SECONDS | --last) OUT.jpg
 *   hagen-compile image IN OUT.jpg --aspect W:H [--fit crop|pad] [--max-side N]
 *   hagen-compile worker --dsn CONNINFO [--jobs N] [--name NAME] [--work-dir DIR] [--grace S]
 *
 * worker is a long-running compile worker for hosts other than the
 * database's (worker.c); it logs to stderr.
 * Everything it reports is JSON on stdout (progress lines, then a result or
 * an error line); library messages go to stderr.
 */
#include "hc.h"

#include <stdio.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <libavutil/log.h>

int
main(int argc, char **argv)
{
	/* Line-buffered: the compile worker reads progress as it comes. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	av_log_set_level(AV_LOG_ERROR);
#ifdef __GLIBC__
	/*
	 * Every input is opened and probed in turn, and probing a 1080p clip
	 * decodes a few frames into zeroed buffer pools that are freed at its
	 * close.  With glibc's defaults the freed top of the heap went back to
	 * the kernel each time and the next clip faulted it in again: 60,000
	 * page faults and 0.13 s of system time for 20 clips (bench/compile,
	 * silent case, 0.64 s against 0.50 s with this).  Keeping 16 MB of slack
	 * at the top of the heap costs no resident memory when nothing uses it.
	 */
	mallopt(M_TOP_PAD, 16 * 1024 * 1024);
#endif
	if (argc >= 2 && strcmp(argv[1], "probe") == 0)
		return hc_probe_main(argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "compile") == 0)
		return hc_compile_main(argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "frame") == 0)
		return hc_frame_main(argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "image") == 0)
		return hc_image_main(argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "worker") == 0)
		return hc_worker_main(argc - 1, argv + 1);
	if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0))
	{
		printf("{\"version\":\"%s\",\"libavformat\":\"%s\",\"libavcodec\":\"%s\"}\n",
			   HAGEN_VERSION, LIBAVFORMAT_IDENT, LIBAVCODEC_IDENT);
		return 0;
	}
	hc_fail(0, "usage: hagen-compile probe FILE [--decode] | compile MANIFEST.json | "
			"frame FILE (--at SECONDS | --last) OUT.jpg | image IN OUT.jpg --aspect W:H [--fit crop|pad] ... | "
			"worker --dsn CONNINFO ...");
}
