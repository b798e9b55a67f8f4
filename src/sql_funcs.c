/*-------------------------------------------------------------------------
 *
 * sql_funcs.c
 *	  Small SQL-callable helpers written in C because they sit on the hot
 *	  path of every job: parsing answer bodies, encoding keys, stamping
 *	  updated rows.  (The trigger that wakes the workers is in shmem.c.)
 *
 * IDENTIFICATION
 *	  src/sql_funcs.c
 *
 *-------------------------------------------------------------------------
 */
#include "hagenkit.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "common/jsonapi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(hagen_try_jsonb);

/*
 * hagen._try_jsonb(text): the text as jsonb, or NULL when it is not valid
 * JSON.  Checked first with the non-throwing parser, so no subtransaction
 * is needed for the bodies providers send (which may be HTML or truncated).
 */
Datum
hagen_try_jsonb(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	char	   *s = text_to_cstring(t);
	JsonLexContext *lex;

	lex = makeJsonLexContextCstringLen(s, strlen(s), GetDatabaseEncoding(), false);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(s)));
}

PG_FUNCTION_INFO_V1(hagen_uri_encode);

/*
 * hagen._uri_encode(text, keep_slash): the text's UTF-8 bytes
 * percent-encoded by hagen_percent_encode, the encoder the SigV4 signer
 * uses (s3auth.c).  In C because it runs for every storage request (it
 * was the engine's busiest SQL function under load).
 */
Datum
hagen_uri_encode(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	bool		keep_slash = PG_GETARG_BOOL(1);
	int			len = VARSIZE_ANY_EXHDR(t);
	const char *in = VARDATA_ANY(t);
	const char *utf8 = pg_server_to_any(in, len, PG_UTF8);
	int			ulen = (utf8 == in) ? len : (int) strlen(utf8);
	StringInfoData out;

	initStringInfo(&out);
	hagen_percent_encode(&out, utf8, ulen, keep_slash);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}

PG_FUNCTION_INFO_V1(hagen_touch);

/*
 * hagen._touch(): a BEFORE UPDATE row trigger that sets the row's
 * updated_at to the transaction's time.  In C because it runs for every
 * update of a job or a project (as PL/pgSQL it cost more than the rest of
 * some of those updates).
 */
Datum
hagen_touch(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	static Oid	cached_rel = InvalidOid;
	static int	att;
	int			cols[1];
	Datum		values[1];
	bool		nulls[1] = {false};

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("hagen._touch() must be called as a BEFORE UPDATE row trigger")));
	if (RelationGetRelid(td->tg_relation) != cached_rel)
	{
		att = SPI_fnumber(RelationGetDescr(td->tg_relation), "updated_at");
		if (att <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("table \"%s\" has no column \"updated_at\"",
							RelationGetRelationName(td->tg_relation))));
		cached_rel = RelationGetRelid(td->tg_relation);
	}
	cols[0] = att;
	values[0] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	return PointerGetDatum(heap_modify_tuple_by_cols(td->tg_newtuple,
													 RelationGetDescr(td->tg_relation),
													 1, cols, values, nulls));
}
