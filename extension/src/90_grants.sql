-- Privileges: least privilege through three group roles and SECURITY DEFINER.
-- pgconductor_client (invoke, cancel, read executions) is granted to pgconductor_worker (also
-- claim, complete, heartbeat, declare its tasks), which is granted to pgconductor_admin (also
-- queues, task settings, retries, retention). The public API runs with its owner's rights and a
-- pinned search_path, so members need no privilege on any table; PUBLIC may execute only the
-- helpers that column defaults call. Grant a login role one of the three:
--   GRANT pgconductor_worker TO my_app_worker;

-- The role each public function is granted to, one row per function name (every overload).
-- _apply_privileges() refuses a public function missing here, so none is forgotten.
CREATE FUNCTION pgconductor._api_roles()
RETURNS TABLE (fn text, role text)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('invoke', 'pgconductor_client'), ('invoke_batch', 'pgconductor_client'),
           ('cancel', 'pgconductor_client'), ('get_execution', 'pgconductor_client'),
           ('list_executions', 'pgconductor_client'), ('task_overview', 'pgconductor_client'),
           ('queue_stats', 'pgconductor_client'), ('orchestrator_stats', 'pgconductor_client'),
           ('version', 'pgconductor_client'), ('emit_event', 'pgconductor_client'),
           ('submit', 'pgconductor_client'), ('submit_batch', 'pgconductor_client'),
           ('cancel_by_key', 'pgconductor_client'), ('flow_status', 'pgconductor_client'),
           ('get_executions', 'pgconductor_worker'), ('return_executions', 'pgconductor_worker'),
           ('heartbeat', 'pgconductor_worker'), ('recover_stale', 'pgconductor_worker'),
           ('release_orchestrator', 'pgconductor_worker'), ('declare_task', 'pgconductor_worker'),
           ('save_steps', 'pgconductor_worker'), ('maintain', 'pgconductor_worker'),
           ('has_due_work', 'pgconductor_worker'),
           ('register_task', 'pgconductor_admin'), ('create_queue', 'pgconductor_admin'),
           ('drop_queue', 'pgconductor_admin'), ('retry', 'pgconductor_admin'),
           ('retry_executions', 'pgconductor_admin'), ('prune_finished', 'pgconductor_admin'),
           ('request_shutdown', 'pgconductor_admin'), ('pause_queue', 'pgconductor_admin'),
           ('resume_queue', 'pgconductor_admin'), ('pause_task', 'pgconductor_admin'),
           ('resume_task', 'pgconductor_admin'), ('set_fair_share', 'pgconductor_admin'),
           ('set_key_weight', 'pgconductor_admin'),
           ('schedule', 'pgconductor_client'), ('unschedule', 'pgconductor_client'),
           ('schedules', 'pgconductor_client'), ('occurrence_of', 'pgconductor_client'),
           ('subscriptions', 'pgconductor_client'), ('table_subscriptions', 'pgconductor_client'),
           ('tick', 'pgconductor_worker'), ('sync_static_schedules', 'pgconductor_worker'),
           ('subscribe', 'pgconductor_worker'), ('unsubscribe', 'pgconductor_worker'),
           ('sync_static_subscriptions', 'pgconductor_worker'),
           ('subscribe_table', 'pgconductor_worker'), ('unsubscribe_table', 'pgconductor_worker'),
           ('sync_static_table_subscriptions', 'pgconductor_worker'),
           ('pause_schedule', 'pgconductor_admin'), ('resume_schedule', 'pgconductor_admin'),
           ('backfill', 'pgconductor_admin')
$$;

-- Creates the three group roles when missing (they are cluster-wide: another database's
-- install may have made them) and when the installing role may create roles; otherwise says
-- so in a NOTICE. Then makes every public function SECURITY DEFINER, executable only by its
-- role (and the owner), and every internal helper not executable by PUBLIC except _now,
-- _uuid7 and _test_clock (column defaults). Run by the install script and every update
-- script, so new functions get their grants. Raises 42883 for a public function without a role.
CREATE FUNCTION pgconductor._apply_privileges()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fn      record;
    v_role    text;
    v_missing text;
    v_roles   boolean;
BEGIN
    SELECT string_agg(DISTINCT p.proname, ', ') INTO v_missing
      FROM pg_catalog.pg_proc AS p
     WHERE p.pronamespace = 'pgconductor'::regnamespace AND p.proname NOT LIKE '\_%' AND p.prokind = 'f'
       AND p.proname NOT IN (SELECT a.fn FROM pgconductor._api_roles() AS a);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'public function(s) % have no role in _api_roles()', v_missing
            USING ERRCODE = '42883', HINT = 'Add each to pgconductor._api_roles() in 90_grants.sql.';
    END IF;

    FOREACH v_role IN ARRAY ARRAY['pgconductor_client', 'pgconductor_worker', 'pgconductor_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles AS r WHERE r.rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'pgconductor: could not create role % (no CREATEROLE); grant EXECUTE on the API functions yourself', v_role;
            END;
        END IF;
    END LOOP;
    v_roles := (SELECT count(*) = 3 FROM pg_catalog.pg_roles AS r
                 WHERE r.rolname IN ('pgconductor_client', 'pgconductor_worker', 'pgconductor_admin'));
    IF v_roles THEN
        IF NOT pg_catalog.pg_has_role('pgconductor_worker', 'pgconductor_client', 'MEMBER') THEN
            GRANT pgconductor_client TO pgconductor_worker;
        END IF;
        IF NOT pg_catalog.pg_has_role('pgconductor_admin', 'pgconductor_worker', 'MEMBER') THEN
            GRANT pgconductor_worker TO pgconductor_admin;
        END IF;
        GRANT USAGE ON SCHEMA pgconductor TO pgconductor_client;
    END IF;

    FOR v_fn IN
        SELECT p.oid::regprocedure AS sig, p.proname, a.role
          FROM pg_catalog.pg_proc AS p
          LEFT JOIN pgconductor._api_roles() AS a ON a.fn = p.proname
         WHERE p.pronamespace = 'pgconductor'::regnamespace AND p.prokind = 'f'
           AND p.prorettype <> 'trigger'::regtype
           AND p.proname NOT IN ('_now', '_uuid7', '_test_clock')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn.sig);
        IF v_fn.role IS NOT NULL THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', v_fn.sig);
            IF v_roles THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', v_fn.sig, v_fn.role);
            END IF;
        END IF;
    END LOOP;
END
$$;

SELECT pgconductor._apply_privileges();
