-- hagenkit install script, part 58: deleting all of a project's objects
-- from the bucket (the prefix {workspace_id}/videos/{project_id}/).
--
-- A purge job belongs to no project (its project_id is NULL), so it
-- outlives the row: deleting a project schedules one.  Steps:
--   abort   DELETE ?uploadId= for each multipart upload the project left open
--   list    ListObjectsV2 of the prefix, 1000 keys a page, with continuation
--   delete  DeleteObjects of that page (Content-MD5, quiet), then the next page
-- Its state counts what was deleted and what S3 refused to delete.

-- The body of a DeleteObjects request for some keys (at most 1000).
CREATE FUNCTION hagen._delete_xml(keys jsonb) RETURNS text
	LANGUAGE sql IMMUTABLE
	RETURN xmlelement(name "Delete", xmlattributes('http://s3.amazonaws.com/doc/2006-03-01/' AS xmlns),
					  xmlelement(name "Quiet", true),
					  (SELECT xmlagg(xmlelement(name "Object", xmlelement(name "Key", k)) ORDER BY n)
					   FROM jsonb_array_elements_text(keys) WITH ORDINALITY AS x(k, n)))::text;

-- Queues the deletion of everything under a project's prefix; aborts lists
-- multipart uploads to abort first ({key, upload_id}), and the job starts at
-- after (when requests of the project may still be in flight).  Returns the
-- job's id (that of the purge already queued for that prefix, if any).
CREATE FUNCTION hagen._schedule_purge(workspace text, project uuid, aborts jsonb DEFAULT '[]',
									  after timestamptz DEFAULT now())
	RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	prefix text := left(hagen.get_video_path(workspace, project, 'x'), -1);
	new_id bigint;
BEGIN
	INSERT INTO hagen.job (project_id, kind, lane, provider, step, state, run_at)
	VALUES (NULL, 'purge', 'http', 's3',
			CASE WHEN jsonb_array_length(coalesce(aborts, '[]')) > 0 THEN 'abort' ELSE 'list' END,
			jsonb_build_object('prefix', prefix, 'project_id', project, 'workspace_id', workspace,
							   'aborts', coalesce(aborts, '[]'), 'keys', '[]'::jsonb,
							   'deleted', 0, 'failed', 0, 'pages', 0),
			greatest(now(), coalesce(after, now())))
	ON CONFLICT DO NOTHING
	RETURNING id INTO new_id;
	IF new_id IS NULL THEN
		SELECT id INTO new_id FROM hagen.job
		WHERE kind = 'purge' AND status IN ('queued', 'running') AND state ->> 'prefix' = prefix;
	ELSE
		PERFORM hagen._log(new_id, NULL, 'info', format('purge of %s queued', prefix),
						   jsonb_build_object('project_id', project));
	END IF;
	RETURN new_id;
END;
$$;

-- Deletes every stored object of a project (its clips, transitions, final
-- video, thumbnail: all under {workspace_id}/videos/{project_id}/), in the
-- background; returns the id of the job doing it.  The project's rows stay.
-- For a project already deleted, give its workspace id.
CREATE FUNCTION hagen.delete_project_objects(project_id uuid, workspace_id text DEFAULT NULL)
	RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	p hagen.video_project;
BEGIN
	IF project_id IS NULL THEN
		RAISE EXCEPTION 'project id must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the uuid returned by hagen.create_project().';
	END IF;
	IF EXISTS (SELECT 1 FROM hagen.video_project v WHERE v.id = delete_project_objects.project_id) THEN
		p := hagen._project(delete_project_objects.project_id);	-- checks the caller's workspaces
		IF workspace_id IS NOT NULL AND workspace_id <> p.workspace_id THEN
			RAISE EXCEPTION 'video project % belongs to workspace "%", not "%"', p.id,
							p.workspace_id, workspace_id
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Leave workspace_id out for a project that exists.';
		ELSIF p.status IN ('generating', 'compiling') THEN
			RAISE EXCEPTION 'video project % is %', p.id, p.status
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Cancel it with hagen.cancel_video() first.';
		END IF;
		workspace_id := p.workspace_id;
	ELSIF workspace_id IS NULL THEN
		RAISE EXCEPTION 'video project % does not exist', delete_project_objects.project_id
			USING ERRCODE = 'undefined_object',
				  HINT = 'To delete the objects of a project that was deleted, give its workspace id too.';
	ELSE
		PERFORM hagen._check_workspace(workspace_id);
	END IF;
	PERFORM hagen._s3_bucket_url();
	RETURN hagen._schedule_purge(workspace_id, delete_project_objects.project_id);
END;
$$;

-- Deleting a project that was ever started deletes its objects and its
-- work files: the multipart uploads it left open are aborted, and the purge
-- and the cleanup wait until no request of the project can still be in
-- flight (the longest lease).
CREATE FUNCTION hagen._project_deleted() RETURNS trigger
	LANGUAGE plpgsql AS $$
DECLARE
	aborts jsonb;
	after timestamptz;
BEGIN
	IF OLD.started_at IS NULL THEN
		RETURN OLD;
	END IF;
	SELECT coalesce(jsonb_agg(jsonb_build_object('key', j.state ->> 'key',
												 'upload_id', j.state ->> 'upload_id') ORDER BY j.id)
					FILTER (WHERE j.kind <> 'upload_part' AND j.state ->> 'upload_id' IS NOT NULL
							AND j.state ->> 'upload_done' IS NULL), '[]'),
		   -- A compile worker notices within seconds that its job is gone
		   -- (its heartbeat fails) and stops the helper; the dispatcher's
		   -- requests run until their lease ends.
		   max(CASE WHEN j.lane = 'compile' THEN least(j.lease_expires_at, now() + interval '10 seconds')
					ELSE j.lease_expires_at END) FILTER (WHERE j.status = 'running')
	INTO aborts, after
	FROM hagen.job j
	WHERE j.project_id = OLD.id AND j.status IN ('queued', 'running');
	PERFORM hagen._schedule_purge(OLD.workspace_id, OLD.id, aborts,
								  CASE WHEN after IS NOT NULL THEN least(after, now() + interval '1 hour') END);
	-- Its work files go too, once nothing of it can still be writing them.
	PERFORM hagen._queue_cleanup(OLD.id::text, 'the project was deleted',
								 CASE WHEN after IS NOT NULL THEN least(after, now() + interval '1 hour') END);
	RETURN OLD;
END;
$$;
CREATE TRIGGER video_project_purge BEFORE DELETE ON hagen.video_project
	FOR EACH ROW EXECUTE FUNCTION hagen._project_deleted();

-- The effect of the current step of a purge job.
CREATE FUNCTION hagen._purge_effect(j hagen.job) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	body text;
BEGIN
	CASE j.step
	WHEN 'abort' THEN
		RETURN hagen._upload_abort_effect(j.state -> 'aborts' -> 0 ->> 'key',
										  j.state -> 'aborts' -> 0 ->> 'upload_id');
	WHEN 'list' THEN
		RETURN hagen._http('GET', hagen._s3_bucket_url() || '?list-type=2&max-keys=1000&prefix='
				|| hagen._uri_encode(j.state ->> 'prefix', false)
				|| coalesce('&continuation-token=' || hagen._uri_encode(j.state ->> 'token', false), ''),
			's3', 'request');
	WHEN 'delete' THEN
		body := hagen._delete_xml(j.state -> 'keys');
		RETURN hagen._http('POST', hagen._s3_bucket_url() || '?delete', 's3', 'batch',
			jsonb_build_object('headers', jsonb_build_object('content-type', 'application/xml',
				'content-md5', encode(decode(md5(convert_to(body, 'UTF8')), 'hex'), 'base64')),
				'body_text', body));
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a purge job', j.step;
END;
$$;

-- Reads the outcome of a purge step and moves on: abort the next upload,
-- list the next page, delete it; done when a page is the last one.
CREATE FUNCTION hagen._purge_interpret(j hagen.job, o jsonb) RETURNS jsonb
	LANGUAGE plpgsql AS $$
DECLARE
	status integer := coalesce((o ->> 'status')::integer, 0);
	body text := o ->> 'body_text';
	prefix text := j.state ->> 'prefix';
	doc xml;
	bad jsonb;
	keys text[];
	more boolean;
	token text;
	errors text[];
	failed integer;
	deleted integer;
	rest jsonb;
BEGIN
	IF status NOT BETWEEN 200 AND 299 THEN
		IF j.step = 'abort' AND (status IN (404, 405, 501) OR status BETWEEN 200 AND 299) THEN
			NULL;	-- gone already, or a server without AbortMultipartUpload: move on
		ELSE
			RETURN hagen._s3_failure(o, CASE j.step
				WHEN 'abort' THEN format('abort of the multipart upload of %s', j.state -> 'aborts' -> 0 ->> 'key')
				WHEN 'list' THEN format('listing of %s', prefix)
				ELSE format('deletion of %s objects under %s', jsonb_array_length(j.state -> 'keys'), prefix) END);
		END IF;
	END IF;
	CASE j.step
	WHEN 'abort' THEN
		rest := (j.state -> 'aborts') - 0;
		RETURN jsonb_build_object('action', 'advance',
			'step', CASE WHEN jsonb_array_length(rest) > 0 THEN 'abort' ELSE 'list' END,
			'state', jsonb_build_object('aborts', rest),
			'log', format('multipart upload of %s aborted (HTTP %s)',
						  j.state -> 'aborts' -> 0 ->> 'key', status));
	WHEN 'list' THEN
		doc := hagen._xml_doc(body);
		bad := hagen._s3_unexpected(o, doc, 'ListBucketResult', format('listing of %s', prefix));
		IF bad IS NOT NULL THEN
			RETURN bad;
		END IF;
		keys := hagen._xml_values(doc, '/ListBucketResult/Contents/Key');
		more := hagen._xml_value(doc, '/ListBucketResult/IsTruncated') = 'true';
		token := hagen._xml_value(doc, '/ListBucketResult/NextContinuationToken');
		IF more AND coalesce(token, '') = '' THEN
			RETURN jsonb_build_object('action', 'fail', 'error',
				format('listing of %s failed: a truncated page without NextContinuationToken', prefix));
		END IF;
		IF cardinality(keys) > 0 THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'delete',
				'state', jsonb_build_object('keys', to_jsonb(keys), 'more', more,
					'token', CASE WHEN more THEN token END,
					'pages', (j.state ->> 'pages')::integer + 1));
		ELSIF more THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'list',
				'state', jsonb_build_object('token', token, 'pages', (j.state ->> 'pages')::integer + 1));
		END IF;
		RETURN hagen._purge_done(j);
	WHEN 'delete' THEN
		doc := hagen._xml_doc(body);
		bad := hagen._s3_unexpected(o, doc, 'DeleteResult',
			format('deletion of %s objects under %s', jsonb_array_length(j.state -> 'keys'), prefix));
		IF bad IS NOT NULL THEN
			RETURN bad;
		END IF;
		-- Quiet mode: the answer lists only the keys that were not deleted.
		SELECT coalesce(array_agg(format('%s (%s)', e.key, concat_ws(': ', e.code, e.message))
								  ORDER BY e.n), '{}')
		INTO errors
		FROM XMLTABLE((hagen._xml_xpath('/DeleteResult/Error')) PASSING (doc)
					  COLUMNS n FOR ORDINALITY,
							  key text PATH '*[local-name()="Key"][1]',
							  code text PATH '*[local-name()="Code"][1]',
							  message text PATH '*[local-name()="Message"][1]') AS e;
		failed := (j.state ->> 'failed')::integer + cardinality(errors);
		deleted := (j.state ->> 'deleted')::integer + jsonb_array_length(j.state -> 'keys') - cardinality(errors);
		j.state := j.state || jsonb_build_object('keys', '[]'::jsonb, 'failed', failed, 'deleted', deleted,
			'first_error', coalesce(j.state ->> 'first_error', errors[1]));
		IF (j.state ->> 'more')::boolean THEN
			RETURN jsonb_build_object('action', 'advance', 'step', 'list', 'state', j.state);
		END IF;
		RETURN hagen._purge_done(j);
	END CASE;
	RAISE EXCEPTION 'unknown step "%" of a purge job', j.step;
END;
$$;

-- The end of a purge: success, or the keys S3 would not delete.
CREATE FUNCTION hagen._purge_done(j hagen.job) RETURNS jsonb
	LANGUAGE sql IMMUTABLE
	RETURN CASE WHEN (j.state ->> 'failed')::integer > 0 THEN
		jsonb_build_object('action', 'fail', 'state', j.state,
			'error', format('%s of %s objects under %s could not be deleted, e.g. %s',
							j.state ->> 'failed',
							(j.state ->> 'failed')::integer + (j.state ->> 'deleted')::integer,
							j.state ->> 'prefix', j.state ->> 'first_error'))
	ELSE
		jsonb_build_object('action', 'succeed', 'state', j.state,
			'log', format('deleted %s objects under %s', j.state ->> 'deleted', j.state ->> 'prefix'))
	END;
