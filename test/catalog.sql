-- Describes every object of the hagenkit extension, one line each, sorted:
-- what test/t/006_upgrade.pl compares between an upgraded and a fresh
-- install.  Columns are listed in their order; dropped columns are skipped.
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'hagenkit'),
members AS (
	SELECT d.classid, d.objid FROM pg_depend d, ext
	WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rels AS (
	SELECT c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
)
SELECT line FROM (
	SELECT 'member ' || pg_describe_object(classid, objid, 0) AS line FROM members
	UNION ALL
	SELECT format('function %s: secdef=%s config=%s acl=%s comment=%s%s%s', p.oid::regprocedure,
				  p.prosecdef, p.proconfig, p.proacl, obj_description(p.oid, 'pg_proc'), E'\n',
				  CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END)
	FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
	UNION ALL
	SELECT format('relation %s kind=%s acl=%s rls=%s/%s options=%s comment=%s', c.oid::regclass,
				  c.relkind, c.relacl, c.relrowsecurity, c.relforcerowsecurity, c.reloptions,
				  obj_description(c.oid, 'pg_class'))
	FROM rels c
	UNION ALL
	SELECT format('column %s #%s %s %s notnull=%s default=%s identity=%s generated=%s acl=%s comment=%s',
				  c.oid::regclass,
				  row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
				  format_type(a.atttypid, a.atttypmod), a.attnotnull,
				  pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attacl,
				  col_description(c.oid, a.attnum))
	FROM rels c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
	UNION ALL
	SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass, pg_get_constraintdef(co.oid))
	FROM pg_constraint co JOIN rels c ON c.oid = co.conrelid
	UNION ALL
	SELECT 'index ' || pg_get_indexdef(i.indexrelid)
	FROM pg_index i JOIN rels c ON c.oid = i.indrelid
	UNION ALL
	SELECT 'trigger ' || pg_get_triggerdef(t.oid)
	FROM pg_trigger t JOIN rels c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
	UNION ALL
	SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid))
	FROM rels c WHERE c.relkind IN ('v', 'm')
	UNION ALL
	SELECT format('policy %s on %s.%s: %s %s to %s using %s check %s', policyname, schemaname, tablename,
				  permissive, cmd, roles, qual, with_check)
	FROM pg_policies WHERE schemaname = 'hagen'
	UNION ALL
	SELECT format('sequence %s: %s', s.seqrelid::regclass, row(s.seqtypid::regtype, s.seqstart, s.seqincrement,
				  s.seqmax, s.seqmin, s.seqcache, s.seqcycle))
	FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'hagen'
	UNION ALL
	SELECT format('type %s: %s', t.oid::regtype,
				  (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid))
	FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
	UNION ALL
	SELECT format('schema %s owner-acl=%s', nspname, nspacl) FROM pg_namespace WHERE nspname = 'hagen'
	UNION ALL
	SELECT format('dumped %s where %s', cfg::regclass, cond)
	FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(cfg, cond) WHERE e.extname = 'hagenkit'
	UNION ALL
	SELECT format('role %s login=%s', rolname, rolcanlogin) FROM pg_roles WHERE rolname LIKE 'hagen\_%'
) lines
ORDER BY line;
