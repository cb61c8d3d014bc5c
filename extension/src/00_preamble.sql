-- pgconductor: durable task execution on PostgreSQL alone.
--
-- This script is built by concatenating extension/src/NN_*.sql in order (see the Makefile).
-- Every scheduling rule lives in the functions below; clients only call them.
--
-- Settings read by the extension:
--   pgconductor.fake_now    timestamptz text; when set, pgconductor._now() returns it instead of
--                           the transaction time. Tests move time with it: SET pgconductor.fake_now = '...'.
--   pgconductor.test_clock  honoured only as a database-wide setting made by the database's owner
--                           (ALTER DATABASE db SET pgconductor.test_clock = on): without it, a session
--                           that sets fake_now gets an error instead of a moved clock.

COMMENT ON SCHEMA pgconductor IS 'pgconductor: durable task execution (tables, claim/complete/heartbeat functions)';
