/*-------------------------------------------------------------------------
 *
 * http.h
 *	  The HTTP executor: carries out "http" effects through one libcurl
 *	  multi handle and hands back their outcomes.
 *
 * IDENTIFICATION
 *	  src/http.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HAGEN_HTTP_H
#define HAGEN_HTTP_H

#include "hagenkit.h"

typedef struct HagenHttp HagenHttp;

extern HagenHttp *hagen_http_create(MemoryContext cxt);
extern void hagen_http_start(HagenHttp *h, int64 job_id, int64 token, Jsonb *effect);
extern int	hagen_http_inflight(HagenHttp *h);
extern bool hagen_http_wait(HagenHttp *h, long timeout_ms);
extern bool hagen_http_next_done(HagenHttp *h, int64 *job_id, int64 *token,
								 char **outcome_json);

/* Signing of "s3" requests (s3auth.c) */
extern struct curl_slist *hagen_s3_sign(struct curl_slist *headers, const char *method,
										const char *url, char **error);

#endif							/* HAGEN_HTTP_H */
