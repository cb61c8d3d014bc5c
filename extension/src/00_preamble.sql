-- pgconductor: durable task execution on PostgreSQL alone.
--
-- This script is built by concatenating extension/src/NN_*.sql in order (see the Makefile).
-- Every scheduling rule lives in the functions below; clients only call them.
--
-- Settings read by the extension:
--   pgconductor.fake_now  timestamptz text; when set, pgconductor._now() returns it instead of
--                         the transaction time. Tests move time with it: SET pgconductor.fake_now = '...'.

COMMENT ON SCHEMA pgconductor IS 'pgconductor: durable task execution (tables, claim/complete/heartbeat functions)';
