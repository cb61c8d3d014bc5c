-- Database-change triggers: subscribe_table() puts an AFTER ROW trigger on a user's table whose
-- every insert, update or delete (the chosen ones) enqueues an execution of a task, in the
-- changing transaction (a rollback makes none), with payload {op, table, old, new}.

-- One row per (task, table). table_name: the table (regclass: dump and restore keep it by
-- name); ops: some of insert, update, delete; columns: the columns old and new carry (NULL:
-- all); when_clause: the trigger's WHEN condition, the subscriber's own SQL; queue NULL: the
-- task's queue; trigger_name: the trigger on the table; static: declared in code (see
-- sync_static_table_subscriptions).
CREATE TABLE pgconductor.table_subscriptions (
    task_key     text NOT NULL CONSTRAINT table_subscriptions_task_key_valid
                     CHECK (char_length(task_key) BETWEEN 1 AND 200 AND task_key !~ '[[:cntrl:]]' AND task_key = btrim(task_key)),
    table_name   regclass NOT NULL,
    ops          text[] NOT NULL CONSTRAINT table_subscriptions_ops_valid
                     CHECK (cardinality(ops) >= 1 AND ops <@ ARRAY['insert', 'update', 'delete']),
    columns      text[],
    when_clause  text,
    queue        text CONSTRAINT table_subscriptions_queue_valid CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,47}$'),
    trigger_name text NOT NULL,
    static       boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT pgconductor._now(),
    CONSTRAINT table_subscriptions_pkey PRIMARY KEY (task_key, table_name)
);

-- The name of task p_task_key's trigger on any table: 'pgconductor_' and 20 hex digits of
-- the key's md5 (task keys may hold any character; trigger names are at most 63 bytes).
CREATE FUNCTION pgconductor._table_trigger_name(p_task_key text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN 'pgconductor_' || left(md5(p_task_key), 20);

-- The table or other relation p_table names, NULL when none does or the name is not one
-- (to_regclass raises for some malformed names). Locks nothing.
CREATE FUNCTION pgconductor._regclass(p_table text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN to_regclass(p_table);
EXCEPTION WHEN invalid_name OR syntax_error OR feature_not_supported OR name_too_long THEN
    RETURN NULL;
END
$$;

-- The table p_table names ('schema.table', quoted as SQL quotes identifiers, e.g.
-- '"My Schema"."Orders"'; unqualified names are looked up in pg_catalog only). Raises 42P01
-- for an unknown table or a bad name, 42809 for a view or other non-table or a partition (its
-- partitioned table is subscribed), 22023 for a table of pgconductor or of the system. Locks nothing.
CREATE FUNCTION pgconductor._user_table(p_table text)
RETURNS regclass
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
    v_kind  "char";
    v_part  boolean;
    v_nsp   text;
BEGIN
    v_table := pgconductor._regclass(p_table);
    IF v_table IS NULL THEN
        RAISE EXCEPTION 'unknown table %', pgconductor._show(p_table)
            USING ERRCODE = '42P01', HINT = 'Name it with its schema, quoted as in SQL: public.orders, "My Schema"."Orders".';
    END IF;
    SELECT c.relkind, c.relispartition, n.nspname INTO v_kind, v_part, v_nsp
      FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = v_table;
    IF v_part THEN
        RAISE EXCEPTION '% is a partition', pgconductor._show(p_table)
            USING ERRCODE = '42809', HINT = 'Subscribe to its partitioned table: the trigger reaches every partition.';
    END IF;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', pgconductor._show(p_table)
            USING ERRCODE = '42809', HINT = 'Subscribe to a table (plain or partitioned), not a view, sequence or index.';
    END IF;
    IF v_nsp IN ('pgconductor', 'pg_catalog', 'information_schema') OR v_nsp LIKE 'pg\_toast%' THEN
        RAISE EXCEPTION 'cannot subscribe to % of schema %', pgconductor._show(p_table), quote_ident(v_nsp)
            USING ERRCODE = '22023', HINT = 'Subscribe to the tables of your own schemas.';
    END IF;
    RETURN v_table;
END
$$;

-- Raises 22023 unless p_when is NULL or can only be one expression inside the trigger's
-- WHEN (...): parentheses balanced, no ";", comment, dollar quote or backslash outside or
-- (backslash) inside quotes, no quote left open. This keeps a WHEN clause from closing the
-- CREATE TRIGGER statement; what the expression does is the subscriber's own SQL. Returns nothing.
CREATE FUNCTION pgconductor._assert_when_clause(p_when text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n     integer := char_length(p_when);
    v_i     integer := 1;
    v_c     text;
    v_quote text;  -- the quote character we are inside of, NULL outside
    v_depth integer := 0;
    v_why   text;
BEGIN
    IF p_when IS NULL THEN
        RETURN;
    END IF;
    IF btrim(p_when) = '' OR v_n > 2000 THEN
        v_why := 'it is empty or longer than 2000 characters';
    ELSIF strpos(p_when, '\') > 0 THEN
        v_why := 'it holds a backslash';
    END IF;
    WHILE v_why IS NULL AND v_i <= v_n LOOP
        v_c := substr(p_when, v_i, 1);
        IF v_quote IS NOT NULL THEN
            IF v_c = v_quote AND substr(p_when, v_i + 1, 1) = v_quote THEN
                v_i := v_i + 1;  -- a doubled quote stays inside
            ELSIF v_c = v_quote THEN
                v_quote := NULL;
            END IF;
        ELSIF v_c IN ('''', '"') THEN
            v_quote := v_c;
        ELSIF v_c = '(' THEN
            v_depth := v_depth + 1;
        ELSIF v_c = ')' THEN
            v_depth := v_depth - 1;
            IF v_depth < 0 THEN
                v_why := 'it closes a parenthesis it did not open';
            END IF;
        ELSIF v_c IN (';', '$') OR substr(p_when, v_i, 2) IN ('--', '/*') THEN
            v_why := format('it holds %s outside quotes', quote_literal(CASE WHEN v_c IN (';', '$') THEN v_c ELSE substr(p_when, v_i, 2) END));
        END IF;
        v_i := v_i + 1;
    END LOOP;
    IF v_why IS NULL AND (v_quote IS NOT NULL OR v_depth <> 0) THEN
        v_why := 'a quote or parenthesis is left open';
    END IF;
    IF v_why IS NOT NULL THEN
        RAISE EXCEPTION 'invalid when clause %: %', pgconductor._show(p_when), v_why
            USING ERRCODE = '22023', HINT = 'Pass one boolean SQL expression over OLD and NEW, e.g. NEW.status = ''paid'', without ";", comments, "$" or backslashes.';
    END IF;
END
$$;

-- The trigger function of every table subscription (AFTER ROW). TG_ARGV: task key, queue
-- ('' for the task's), then the chosen columns (none: all). Enqueues one execution (one
-- INSERT, _submit_one) with payload {op: insert|update|delete, table: "schema.name" (a
-- partition's row names its partitioned table), old, new}, old and new holding only the
-- chosen columns (NULL where the op has none). An update that changed none of them enqueues
-- nothing. SECURITY DEFINER: whoever may change the table enqueues through it, with no
-- privilege on pgconductor's tables. Returns NULL.
CREATE FUNCTION pgconductor._table_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_columns text[] := CASE WHEN TG_NARGS > 2 THEN TG_ARGV[2:TG_NARGS - 1] END;
    v_old     jsonb;
    v_new     jsonb;
    v_root    regclass;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        v_old := pgconductor._project(to_jsonb(OLD), v_columns);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_new := pgconductor._project(to_jsonb(NEW), v_columns);
    END IF;
    IF TG_OP = 'UPDATE' AND v_old = v_new THEN
        RETURN NULL;
    END IF;
    -- A row of a partition fired the trigger cloned from the subscribed partitioned table.
    v_root := pg_partition_root(TG_RELID);
    PERFORM pgconductor._submit_one(
        TG_ARGV[0], jsonb_build_object('op', lower(TG_OP),
                                       'table', coalesce(v_root::text, format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME)),
                                       'old', v_old, 'new', v_new),
        nullif(TG_ARGV[1], ''), NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    RETURN NULL;
END
$$;

-- Subscribes task p_task_key to changes of table p_table (see _user_table for the name): an
-- AFTER ROW trigger for the ops p_ops (some of insert, update, delete), payload columns
-- p_columns (NULL: all; with columns, an UPDATE fires only when one of them changed), WHEN
-- condition p_when (trusted SQL: the subscriber's own boolean expression over OLD and NEW, run
-- as the role that changes the table), queue p_queue (NULL: the task's). Upsert: the trigger
-- is replaced when a setting differs, left alone when none does. Locks: the table (SHARE ROW
-- EXCLUSIVE, to create the trigger). Raises 42P01 unknown table, 42703 unknown column, 22023
-- bad op, when clause or queue, 42501 when the session user may not create triggers on the
-- table. Returns the trigger's name.
CREATE FUNCTION pgconductor.subscribe_table(
    p_task_key text,
    p_table    text,
    p_ops      text[] DEFAULT '{insert,update,delete}',
    p_columns  text[] DEFAULT NULL,
    p_when     text DEFAULT NULL,
    p_queue    text DEFAULT NULL,
    p_static   boolean DEFAULT false
)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
DECLARE
    v_table   regclass;
    v_ops     text[];
    v_columns text[];
    v_bad     text;
    v_trigger text := pgconductor._table_trigger_name(p_task_key);
    v_old     pgconductor.table_subscriptions;
BEGIN
    PERFORM pgconductor._assert_task_key(p_task_key);
    v_table := pgconductor._user_table(p_table);
    IF p_ops IS NULL OR cardinality(p_ops) = 0
       OR EXISTS (SELECT 1 FROM unnest(p_ops) AS o WHERE o IS NULL OR lower(o) NOT IN ('insert', 'update', 'delete')) THEN
        RAISE EXCEPTION 'invalid ops %', pgconductor._show(p_ops::text)
            USING ERRCODE = '22023', HINT = 'Pass some of insert, update and delete, e.g. {insert,update}.';
    END IF;
    v_ops := ARRAY(SELECT o FROM unnest(ARRAY['insert', 'update', 'delete']) AS o
                    WHERE o IN (SELECT lower(x) FROM unnest(p_ops) AS x));
    IF p_columns IS NOT NULL AND coalesce(cardinality(p_columns), 0) = 0 THEN
        RAISE EXCEPTION 'an empty column list'
            USING ERRCODE = '22023', HINT = 'List the columns old and new carry, e.g. {id,status}; NULL for all.';
    ELSIF p_columns IS NOT NULL THEN
        SELECT c INTO v_bad FROM unnest(p_columns) WITH ORDINALITY AS u(c, ord)
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute AS a
                            WHERE a.attrelid = v_table AND a.attname = u.c AND a.attnum > 0 AND NOT a.attisdropped)
         ORDER BY u.ord LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'table % has no column %', v_table, pgconductor._show(v_bad)
                USING ERRCODE = '42703', HINT = 'List columns of the table by their exact names (case counts); NULL for all.';
        END IF;
        v_columns := ARRAY(SELECT u.c FROM unnest(p_columns) WITH ORDINALITY AS u(c, ord) GROUP BY u.c ORDER BY min(u.ord));
    END IF;
    PERFORM pgconductor._assert_when_clause(p_when);
    IF p_queue IS NOT NULL THEN
        PERFORM pgconductor.create_queue(p_queue);
    END IF;
    IF NOT has_table_privilege(session_user, v_table, 'TRIGGER') THEN
        RAISE EXCEPTION 'role % may not create triggers on %', quote_ident(session_user), v_table
            USING ERRCODE = '42501', HINT = 'The table''s owner grants it: GRANT TRIGGER ON <table> TO <role>.';
    END IF;

    DELETE FROM pgconductor.table_subscriptions AS s  -- tables dropped since took their triggers
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c WHERE c.oid = s.table_name);
    -- Worker start declares its subscriptions again: the same settings change nothing, and
    -- take no lock on the table.
    SELECT * INTO v_old FROM pgconductor.table_subscriptions AS s
     WHERE s.task_key = p_task_key AND s.table_name = v_table;
    IF v_old.ops = v_ops AND v_old.columns IS NOT DISTINCT FROM v_columns
       AND v_old.when_clause IS NOT DISTINCT FROM p_when AND v_old.queue IS NOT DISTINCT FROM p_queue
       AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = v_table AND t.tgname = v_trigger) THEN
        UPDATE pgconductor.table_subscriptions AS s SET static = coalesce(p_static, false)
         WHERE s.task_key = p_task_key AND s.table_name = v_table;
        RETURN v_trigger;
    END IF;

    -- The lock CREATE TRIGGER takes, taken first: a concurrent call for the same table waits
    -- here, then sees the trigger this one made.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', v_table);
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = v_table AND t.tgname = v_trigger) THEN
        EXECUTE format('DROP TRIGGER %I ON %s', v_trigger, v_table);
    END IF;
    BEGIN
        EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s FOR EACH ROW %s EXECUTE FUNCTION pgconductor._table_changed(%s)',
                       v_trigger,
                       (SELECT string_agg(CASE WHEN o = 'update' AND v_columns IS NOT NULL
                                               THEN 'UPDATE OF ' || (SELECT string_agg(quote_ident(c), ', ') FROM unnest(v_columns) AS c)
                                               ELSE upper(o) END, ' OR ') FROM unnest(v_ops) AS o),
                       v_table,
                       CASE WHEN p_when IS NOT NULL THEN format(E'WHEN (%s\n)', p_when) ELSE '' END,
                       (SELECT string_agg(quote_literal(a), ', ')
                          FROM unnest(ARRAY[p_task_key, coalesce(p_queue, '')] || v_columns) AS a));
    EXCEPTION WHEN syntax_error OR undefined_column OR undefined_function OR datatype_mismatch
                   OR invalid_object_definition OR undefined_table OR feature_not_supported THEN
        IF p_when IS NULL THEN
            RAISE;
        END IF;
        RAISE EXCEPTION 'invalid when clause %: %', pgconductor._show(p_when), SQLERRM
            USING ERRCODE = SQLSTATE, HINT = 'Pass one boolean SQL expression over OLD and NEW (no OLD with insert, no NEW with delete).';
    END;
    INSERT INTO pgconductor.table_subscriptions AS s
        (task_key, table_name, ops, columns, when_clause, queue, trigger_name, static)
    VALUES (p_task_key, v_table, v_ops, v_columns, p_when, p_queue, v_trigger, coalesce(p_static, false))
    ON CONFLICT (task_key, table_name) DO UPDATE
       SET ops = excluded.ops, columns = excluded.columns, when_clause = excluded.when_clause,
           queue = excluded.queue, trigger_name = excluded.trigger_name, static = excluded.static;
    RETURN v_trigger;
END
$$;

-- Drops task p_task_key's trigger on table p_table and its row. A table that does not exist
-- (any more) removes nothing, but rows of dropped tables go. Locks: the table (SHARE ROW
-- EXCLUSIVE). Returns false when there was no such subscription.
CREATE FUNCTION pgconductor.unsubscribe_table(p_task_key text, p_table text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
BEGIN
    DELETE FROM pgconductor.table_subscriptions AS s
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c WHERE c.oid = s.table_name);
    v_table := pgconductor._regclass(p_table);
    IF NOT EXISTS (SELECT 1 FROM pgconductor.table_subscriptions AS s WHERE s.task_key = p_task_key AND s.table_name = v_table) THEN
        RETURN false;
    END IF;
    -- Table first, then the row: the order subscribe_table() takes them in.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', v_table);
    DELETE FROM pgconductor.table_subscriptions AS s WHERE s.task_key = p_task_key AND s.table_name = v_table;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger AS t
                WHERE t.tgrelid = v_table AND t.tgname = pgconductor._table_trigger_name(p_task_key)) THEN
        EXECUTE format('DROP TRIGGER %I ON %s', pgconductor._table_trigger_name(p_task_key), v_table);
    END IF;
    RETURN true;
END
$$;

-- Every table subscription, by table then task (table as "schema.name"). Locks nothing.
CREATE FUNCTION pgconductor.table_subscriptions()
RETURNS TABLE (task_key text, table_name text, ops text[], columns text[], when_clause text, queue text,
               trigger_name text, static boolean, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.task_key, format('%I.%I', n.nspname, c.relname), s.ops, s.columns, s.when_clause, s.queue,
           s.trigger_name, s.static, s.created_at
      FROM pgconductor.table_subscriptions AS s
      JOIN pg_catalog.pg_class AS c ON c.oid = s.table_name
      JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     ORDER BY 2, 1
$$;

-- Worker start: drops the static table subscriptions (trigger and row) of the tasks
-- p_task_keys that are not among the declared pairs (p_tables[i] of p_declared_tasks[i]; a
-- declared table that does not exist matches nothing). Dynamic ones and other tasks' stay.
-- Locks: the tables whose triggers it drops. Returns how many it dropped.
CREATE FUNCTION pgconductor.sync_static_table_subscriptions(p_task_keys text[], p_declared_tasks text[], p_tables text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row   record;
    v_count integer := 0;
BEGIN
    IF coalesce(cardinality(p_declared_tasks), 0) <> coalesce(cardinality(p_tables), 0) THEN
        RAISE EXCEPTION 'declared tasks and tables have different lengths'
            USING ERRCODE = '22023', HINT = 'Pass one task key per declared table.';
    END IF;
    FOR v_row IN
        SELECT s.task_key, s.table_name FROM pgconductor.table_subscriptions AS s
         WHERE s.static AND s.task_key = ANY (p_task_keys)
           AND NOT EXISTS (SELECT 1 FROM unnest(p_declared_tasks, p_tables) AS d(t, n)
                            WHERE d.t = s.task_key AND pgconductor._regclass(d.n) = s.table_name)
    LOOP
        v_count := v_count + pgconductor.unsubscribe_table(v_row.task_key, v_row.table_name::text)::integer;
    END LOOP;
    RETURN v_count;
END
$$;
