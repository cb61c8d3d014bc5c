-- Privileges: internal helpers (names starting with "_") are not callable by PUBLIC.
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'pgconductor'::regnamespace AND p.proname LIKE '\_%'
           AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
           -- used by column defaults (_test_clock through _now): every writer needs them
           AND p.proname NOT IN ('_now', '_uuid7', '_test_clock')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn);
    END LOOP;
END
$$;
