/*
 * worker_db.c: the database side of `hagen-compile worker`: one libpq
 * connection, LISTEN hagen_compile, and the five calls of the remote
 * protocol (hagen.worker_claim, worker_heartbeat, worker_complete,
 * worker_release, worker_next_due).
 *
 * A connection that fails or is lost is tried again after an exponential
 * back-off with jitter (1 s doubling to 30 s, each wait a random 50-100 %
 * of that), whatever the reason: a database restarting, a wrong password
 * or a role without hagen_worker all end when someone fixes them, and the
 * message says which it is.  The DSN itself is never logged (it may hold
 * a password): only the database, host and user it names.
 */
#include "worker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define BACKOFF_FIRST_S 1.0
#define BACKOFF_MAX_S 30.0

/* A libpq message on one line, without its trailing newline. */
static char *
one_line(const char *msg)
{
	char	   *s = strdup(msg ? msg : "");
	size_t		n;

	char	   *w;

	if (s == NULL)
		return NULL;
	/* Line breaks and runs of spaces become one space. */
	w = s;
	for (char *p = s; *p; p++)
	{
		char		c = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;

		if (c == ' ' && (w == s || w[-1] == ' '))
			continue;
		*w++ = c;
	}
	*w = '\0';
	n = strlen(s);
	while (n > 0 && s[n - 1] == ' ')
		s[--n] = '\0';
	return s;
}

bool
wk_db_check_dsn(const char *dsn)
{
	char	   *err = NULL;
	PQconninfoOption *opts;

	/* A plain word is a database name, as for psql. */
	if (strchr(dsn, '=') == NULL && strncmp(dsn, "postgres://", 11) != 0 &&
		strncmp(dsn, "postgresql://", 13) != 0)
		return true;
	opts = PQconninfoParse(dsn, &err);
	if (opts == NULL)
	{
		char	   *m = one_line(err ? err : "out of memory");

		fprintf(stderr, "hagen-compile worker: invalid --dsn: %s\n", m);
		free(m);
		PQfreemem(err);
		return false;
	}
	PQconninfoFree(opts);
	return true;
}

/* Schedules the next connection attempt after the current back-off. */
void
wk_db_retry_later(WkDb *db, const char *why)
{
	double		wait;

	if (db->backoff <= 0)
		db->backoff = BACKOFF_FIRST_S;
	wait = wk_jitter(db->backoff);
	db->next_attempt = wk_now() + wait;
	wk_log("%s; next try in %.1f s", why, wait);
	db->backoff = db->backoff * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : db->backoff * 2;
}

void
wk_db_drop(WkDb *db, const char *why)
{
	if (db->conn)
	{
		PQfinish(db->conn);
		db->conn = NULL;
	}
	db->backoff = 0;
	wk_db_retry_later(db, why);
}

/* Hints for the ways a connection is refused that someone must fix. */
static const char *
connect_hint(const char *msg)
{
	if (strstr(msg, "password authentication failed") || strstr(msg, "no password supplied") ||
		strstr(msg, "pg_hba.conf") || strstr(msg, "role \"") || strstr(msg, "database \""))
		return " (check --dsn, and the password in ~/.pgpass or PGPASSWORD)";
	return "";
}

/* What the server says outside an answer (a FATAL before it closes the
 * connection, a NOTICE) goes to the log like everything else. */
static void
notice(void *arg, const char *message)
{
	char	   *m = one_line(message);

	(void) arg;
	wk_log("the database says: %s", m ? m : "");
	free(m);
}

/*
 * Tries to connect once; on success LISTENs on hagen_compile.  Timeouts,
 * keepalives and a statement timeout are defaults the DSN may override.
 */
bool
wk_db_connect(WkDb *db)
{
	const char *keys[] = {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
		"keepalives_count", "tcp_user_timeout", "application_name", "options", "dbname", NULL};
	char		appname[128];
	const char *vals[10];
	PGconn	   *conn;
	PGresult   *res;

	snprintf(appname, sizeof(appname), "hagen-compile worker %s", wk_name);
	vals[0] = "10";
	vals[1] = "1";
	vals[2] = "10";
	vals[3] = "5";
	vals[4] = "3";
	vals[5] = "30000";
	vals[6] = appname;
	vals[7] = "-c statement_timeout=60000";
	vals[8] = db->dsn;
	vals[9] = NULL;
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		char	   *m = one_line(conn ? PQerrorMessage(conn) : "out of memory");
		char	   *why = malloc(strlen(m) + 200);

		sprintf(why, "could not connect to the database: %s%s", m, connect_hint(m));
		PQfinish(conn);
		wk_db_retry_later(db, why);
		free(why);
		free(m);
		return false;
	}
	res = PQexec(conn, "LISTEN hagen_compile");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		char	   *m = one_line(PQerrorMessage(conn));
		char	   *why = malloc(strlen(m) + 100);

		sprintf(why, "could not LISTEN on hagen_compile: %s", m);
		PQclear(res);
		PQfinish(conn);
		wk_db_retry_later(db, why);
		free(why);
		free(m);
		return false;
	}
	PQclear(res);
	PQsetnonblocking(conn, 0);
	PQsetNoticeProcessor(conn, notice, NULL);
	db->conn = conn;
	db->backoff = 0;
	wk_log("connected to database \"%s\" on %s port %s as %s (backend %d)", PQdb(conn),
		   PQhost(conn), PQport(conn), PQuser(conn), PQbackendPID(conn));
	return true;
}

/* Closes the connection at exit. */
void
wk_db_drop_quietly(WkDb *db)
{
	if (db->conn)
		PQfinish(db->conn);
	db->conn = NULL;
}

int
wk_db_socket(WkDb *db)
{
	return db->conn ? PQsocket(db->conn) : -1;
}

/*
 * Reads what the server sent (notifications); false when the connection
 * was lost (it is then dropped).
 */
bool
wk_db_poll(WkDb *db, bool *notified)
{
	PGnotify   *n;

	if (db->conn == NULL)
		return false;
	if (!PQconsumeInput(db->conn) || PQstatus(db->conn) != CONNECTION_OK)
	{
		char	   *m = one_line(PQerrorMessage(db->conn));
		char	   *why = malloc(strlen(m) + 64);

		sprintf(why, "lost the database connection: %s", m);
		wk_db_drop(db, why);
		free(why);
		free(m);
		return false;
	}
	while ((n = PQnotifies(db->conn)) != NULL)
	{
		*notified = true;
		PQfreemem(n);
	}
	return true;
}

/* Hints for errors of a protocol call that the DBA must fix. */
static const char *
call_hint(const char *sqlstate, const char *fn)
{
	static char buf[256];

	if (strcmp(sqlstate, "42501") == 0 && strstr(fn, "worker_"))
	{
		snprintf(buf, sizeof(buf), " (the role needs hagen_worker: GRANT hagen_worker TO <role>, as the DBA)");
		return buf;
	}
	if (strcmp(sqlstate, "42883") == 0 || strcmp(sqlstate, "3F000") == 0)
		return " (is hagenkit 0.4 installed in this database? CREATE EXTENSION hagenkit, or ALTER EXTENSION hagenkit UPDATE)";
	return "";
}

/*
 * Runs one protocol call.  Returns WK_OK with *res set, WK_LOST when the
 * connection is gone (dropped here), or WK_FAILED when the call raised an
 * error (logged, with a hint when the fix is known).
 */
static WkResult
call(WkDb *db, const char *fn, const char *sql, int n, const char *const *params, PGresult **res)
{
	PGresult   *r;
	const char *state;
	char	   *m;

	*res = NULL;
	if (db->conn == NULL)
		return WK_LOST;
	r = PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0);
	if (r != NULL && (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK))
	{
		*res = r;
		return WK_OK;
	}
	if (r == NULL || PQstatus(db->conn) != CONNECTION_OK)
	{
		m = one_line(PQerrorMessage(db->conn));
		{
			char	   *why = malloc(strlen(m) + 100);

			sprintf(why, "lost the database connection during %s: %s", fn, m);
			wk_db_drop(db, why);
			free(why);
		}
		free(m);
		PQclear(r);
		return WK_LOST;
	}
	state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	m = one_line(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
	free(db->last_error);
	free(db->last_sqlstate);
	db->last_error = m;
	db->last_sqlstate = strdup(state ? state : "");
	wk_log("%s failed: %s (SQLSTATE %s)%s", fn, m, state ? state : "?", call_hint(state ? state : "", fn));
	PQclear(r);
	return WK_FAILED;
}

WkResult
wk_db_claim(WkDb *db, int max_jobs, json_t **claims)
{
	char		n[16];
	const char *params[2];
	PGresult   *res;
	WkResult	rc;

	*claims = json_array();
	snprintf(n, sizeof(n), "%d", max_jobs);
	params[0] = wk_name;
	params[1] = n;
	rc = call(db, "hagen.worker_claim",
			  "SELECT job_id, token, effect FROM hagen.worker_claim($1, $2::integer)", 2, params, &res);
	if (rc != WK_OK)
		return rc;
	for (int i = 0; i < PQntuples(res); i++)
	{
		json_error_t jerr;
		json_t	   *effect = json_loads(PQgetvalue(res, i, 2), 0, &jerr);

		json_array_append_new(*claims, json_pack("{s:I,s:I,s:o*}",
												 "job_id", (json_int_t) strtoll(PQgetvalue(res, i, 0), NULL, 10),
												 "token", (json_int_t) strtoll(PQgetvalue(res, i, 1), NULL, 10),
												 "effect", effect));
	}
	PQclear(res);
	return WK_OK;
}

WkResult
wk_db_heartbeat(WkDb *db, int64_t job, int64_t token, double fraction, bool *keep)
{
	char		j[24],
				t[24],
				f[32];
	const char *params[3];
	PGresult   *res;
	WkResult	rc;

	snprintf(j, sizeof(j), "%lld", (long long) job);
	snprintf(t, sizeof(t), "%lld", (long long) token);
	snprintf(f, sizeof(f), "%.4f", fraction);
	params[0] = j;
	params[1] = t;
	params[2] = fraction >= 0 ? f : NULL;
	rc = call(db, "hagen.worker_heartbeat",
			  "SELECT hagen.worker_heartbeat($1::bigint, $2::bigint, $3::double precision)", 3, params, &res);
	if (rc != WK_OK)
		return rc;
	*keep = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return WK_OK;
}

WkResult
wk_db_complete(WkDb *db, int64_t job, int64_t token, json_t *outcome, char **answer)
{
	char		j[24],
				t[24];
	const char *params[3];
	char	   *text = json_dumps(outcome, JSON_COMPACT);
	PGresult   *res;
	WkResult	rc;

	snprintf(j, sizeof(j), "%lld", (long long) job);
	snprintf(t, sizeof(t), "%lld", (long long) token);
	params[0] = j;
	params[1] = t;
	params[2] = text;
	rc = call(db, "hagen.worker_complete",
			  "SELECT hagen.worker_complete($1::bigint, $2::bigint, $3::jsonb)", 3, params, &res);
	free(text);
	if (rc != WK_OK)
		return rc;
	*answer = strdup(PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
	PQclear(res);
	return WK_OK;
}

WkResult
wk_db_release(WkDb *db, int64_t job, int64_t token, bool *released)
{
	char		j[24],
				t[24];
	const char *params[2];
	PGresult   *res;
	WkResult	rc;

	snprintf(j, sizeof(j), "%lld", (long long) job);
	snprintf(t, sizeof(t), "%lld", (long long) token);
	params[0] = j;
	params[1] = t;
	rc = call(db, "hagen.worker_release", "SELECT hagen.worker_release($1::bigint, $2::bigint)", 2, params, &res);
	if (rc != WK_OK)
		return rc;
	*released = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return WK_OK;
}

WkResult
wk_db_next_due(WkDb *db, long *ms)
{
	PGresult   *res;
	WkResult	rc = call(db, "hagen.worker_next_due", "SELECT hagen.worker_next_due()", 0, NULL, &res);

	if (rc != WK_OK)
		return rc;
	*ms = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : -1;
	PQclear(res);
	return WK_OK;
}
