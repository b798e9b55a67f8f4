-- hagenkit install script, part 46: budgets.  A run that would pass a
-- limit is refused before anything is queued: hagen.max_clips_per_project,
-- hagen.max_project_cents, and a workspace's cents per day.

-- A workspace's limit of cents per day (UTC days): what it spends plus what
-- its runs in flight are estimated to spend may not pass it.  No row: no
-- limit.  Operators set them.
CREATE TABLE hagen.workspace_budget (
	workspace_id	text PRIMARY KEY CHECK (workspace_id <> ''),
	cents_per_day	integer NOT NULL CHECK (cents_per_day >= 0)
);

-- What each workspace was charged each day (UTC): the cost of every clip
-- and transition generated, added when it is stored.  Kept when projects
-- are deleted, so deleting a project gives no money back.
CREATE TABLE hagen.workspace_spending (
	workspace_id	text NOT NULL,
	day				date NOT NULL,
	cents			bigint NOT NULL DEFAULT 0 CHECK (cents >= 0),
	PRIMARY KEY (workspace_id, day)
);

-- Today, as budgets count days.
CREATE FUNCTION hagen._today() RETURNS date
	LANGUAGE sql STABLE RETURN (now() AT TIME ZONE 'UTC')::date;

-- Adds the cost of a generated clip or transition to its workspace's day.
CREATE FUNCTION hagen._record_spending() RETURNS trigger
	LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO hagen.workspace_spending AS s (workspace_id, day, cents)
	SELECT p.workspace_id, hagen._today(), NEW.cost_cents
	FROM hagen.video_project p WHERE p.id = NEW.project_id
	ON CONFLICT (workspace_id, day) DO UPDATE SET cents = s.cents + EXCLUDED.cents;
	RETURN NULL;
END;
$$;
CREATE TRIGGER job_spending AFTER UPDATE OF status ON hagen.job
	FOR EACH ROW WHEN (NEW.status = 'succeeded' AND OLD.status <> 'succeeded'
					   AND NEW.kind IN ('clip', 'transition') AND NEW.cost_cents > 0)
	EXECUTE FUNCTION hagen._record_spending();

-- What a workspace has spent today and what its generations in flight are
-- estimated to cost (they are paid for as they complete).
CREATE FUNCTION hagen._spent_today(workspace text) RETURNS bigint
	LANGUAGE sql STABLE
	RETURN coalesce((SELECT s.cents FROM hagen.workspace_spending s
					 WHERE s.workspace_id = workspace AND s.day = hagen._today()), 0)
		 + coalesce((SELECT sum((j.state ->> 'cost_cents')::integer)
					 FROM hagen.job j JOIN hagen.video_project p ON p.id = j.project_id
					 WHERE p.workspace_id = workspace AND j.status IN ('queued', 'running')
					   AND j.kind IN ('clip', 'transition')), 0);

-- Refuses a run of a locked project that would pass a limit: run_cost is
-- what the run generates, the project's estimate what it cost so far plus
-- that.  A limit exactly reached is not passed.  Runs of one workspace are
-- checked one at a time, so two cannot both take the last of its day.
CREATE FUNCTION hagen._check_budget(p hagen.video_project, run_cost integer) RETURNS void
	LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	max_clips integer := coalesce(hagen._setting('hagen.max_clips_per_project')::integer, 20);
	max_cents integer := coalesce(hagen._setting('hagen.max_project_cents')::integer, 0);
	per_day integer;
	clips integer;
	spent bigint;
	estimate integer;
	numbers text;
BEGIN
	SELECT b.cents_per_day INTO per_day FROM hagen.workspace_budget b WHERE b.workspace_id = p.workspace_id;
	IF per_day IS NOT NULL THEN
		PERFORM pg_advisory_xact_lock(hashtextextended('hagen.workspace_budget ' || p.workspace_id, 0));
	END IF;
	SELECT count(*) INTO clips FROM hagen.video_clip c WHERE c.project_id = p.id;
	spent := hagen._spent_today(p.workspace_id);
	estimate := (SELECT coalesce(sum(c.cost_cents), 0) FROM hagen.video_clip c WHERE c.project_id = p.id)
				+ run_cost;
	numbers := format('The run is estimated at %s cents (the project at %s); workspace "%s" has spent %s cents today (UTC)%s.',
					  run_cost, estimate, p.workspace_id, spent,
					  CASE WHEN per_day IS NOT NULL THEN format(' of its %s cents per day', per_day) ELSE '' END);
	IF max_clips > 0 AND clips > max_clips THEN
		RAISE EXCEPTION 'video project % has % clips, more than hagen.max_clips_per_project (%)', p.id, clips, max_clips
			USING ERRCODE = 'program_limit_exceeded', DETAIL = numbers,
				  HINT = format('Remove %s clip%s with hagen.remove_clip(), or ask for a higher limit.',
								clips - max_clips, CASE WHEN clips - max_clips = 1 THEN '' ELSE 's' END);
	END IF;
	IF max_cents > 0 AND estimate > max_cents THEN
		RAISE EXCEPTION 'video project % is estimated at % cents, over hagen.max_project_cents (%); workspace "%" has spent % cents today',
			p.id, estimate, max_cents, p.workspace_id, spent
			USING ERRCODE = 'program_limit_exceeded', DETAIL = numbers,
				  HINT = 'Use fewer or shorter clips, turn native audio off, or ask for a higher limit.';
	END IF;
	IF per_day IS NOT NULL AND spent + run_cost > per_day THEN
		RAISE EXCEPTION 'a run of video project % is estimated at % cents; workspace "%" has spent % of its % cents today',
			p.id, run_cost, p.workspace_id, spent, per_day
			USING ERRCODE = 'program_limit_exceeded', DETAIL = numbers,
				  HINT = format('%s cents are left today (UTC); start it tomorrow, make it smaller, or ask an operator to raise hagen.workspace_budget.',
								greatest(per_day - spent, 0));
	END IF;
END;
$$;

-- A workspace's budget today: its limit (NULL: none), what it has spent,
-- what its runs in flight are estimated to cost, and what is left.
CREATE FUNCTION hagen.workspace_budget_status(workspace_id text) RETURNS jsonb
	LANGUAGE plpgsql STABLE AS $$
DECLARE
	per_day integer;
	spent bigint;
	committed bigint;
BEGIN
	IF workspace_id IS NULL OR workspace_id = '' THEN
		RAISE EXCEPTION 'workspace id must not be empty'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the workspace whose budget to show.';
	END IF;
	PERFORM hagen._check_workspace(workspace_id);
	SELECT b.cents_per_day INTO per_day FROM hagen.workspace_budget b
	WHERE b.workspace_id = workspace_budget_status.workspace_id;
	SELECT coalesce(sum(s.cents), 0) INTO spent FROM hagen.workspace_spending s
	WHERE s.workspace_id = workspace_budget_status.workspace_id AND s.day = hagen._today();
	committed := hagen._spent_today(workspace_id) - spent;
	RETURN jsonb_build_object('workspace_id', workspace_id, 'day', hagen._today(),
		'cents_per_day', per_day, 'spent_cents', spent, 'in_flight_cents', committed,
		'left_cents', CASE WHEN per_day IS NOT NULL THEN greatest(per_day - spent - committed, 0) END,
		'max_project_cents', nullif(coalesce(hagen._setting('hagen.max_project_cents')::integer, 0), 0),
		'max_clips_per_project', nullif(coalesce(hagen._setting('hagen.max_clips_per_project')::integer, 20), 0));
END;
$$;
