-- _now() and the test clock's gate (_test_clock).
-- Cases: without pgconductor.fake_now the clock is the transaction time; with it and the
-- database's test clock on, fake_now is the time; with the test clock off, setting fake_now
-- makes every clocked call fail with 55000 and a hint, changing nothing; a role's own setting
-- (ALTER ROLE ... SET) does not turn it on; a role that is not the database owner cannot move
-- time to expire a live orchestrator or date a heartbeat in 2999.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(10);

SELECT is(pgconductor._now(), now(), 'no fake_now: the transaction time');
SET pgconductor.fake_now = '2031-02-03 04:05:06+00';
SELECT is(pgconductor._now(), '2031-02-03 04:05:06+00'::timestamptz, 'fake_now with the test clock on (setup.sql turns it on)');

-- Turn it off for this database (transactional: the ROLLBACK below restores it).
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET pgconductor.test_clock', current_database()); END $$;
SELECT throws_ok($$SELECT pgconductor._now()$$, '55000', NULL, 'test clock off: fake_now is refused');
SELECT throws_like($$SELECT pgconductor.invoke('t')$$, '%test clock is off%', 'so is every call that reads the clock, with a clear message');
SELECT is((SELECT count(*) FROM pgconductor.executions), 0::bigint, 'and nothing was written');
RESET pgconductor.fake_now;
SELECT is(pgconductor._now(), now(), 'without fake_now the real clock works');

-- A role's own setting does not count: only the database-wide one its owner makes.
CREATE ROLE pgc_clock_mover;
GRANT USAGE ON SCHEMA pgconductor TO pgc_clock_mover;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgconductor TO pgc_clock_mover;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgconductor TO pgc_clock_mover;
DO $$ BEGIN EXECUTE format('ALTER ROLE pgc_clock_mover IN DATABASE %I SET pgconductor.test_clock = on', current_database()); END $$;
SELECT pgconductor.heartbeat('00000000-0000-0000-0000-0000000000c1', p_stale_after => '30 seconds');
SET ROLE pgc_clock_mover;
SET pgconductor.fake_now = '2999-01-01 00:00:00+00';
SELECT throws_ok($$SELECT * FROM pgconductor.heartbeat('00000000-0000-0000-0000-0000000000c2')$$, '55000', NULL,
                 'a role that moves the clock cannot heartbeat in 2999');
SELECT throws_ok($$SELECT * FROM pgconductor.recover_stale()$$, '55000', NULL, 'nor run recovery in the future');
RESET pgconductor.fake_now;
RESET ROLE;
SELECT is((SELECT expired_at FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-0000000000c1'), NULL,
          'the live orchestrator was not expired');
SELECT is((SELECT count(*) FROM pgconductor.orchestrators WHERE last_heartbeat_at > now() + interval '1 day'), 0::bigint,
          'no heartbeat is dated in the future');

SELECT * FROM finish();
ROLLBACK;
