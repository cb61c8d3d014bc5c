-- Shared set-up for every pgTAP file: \i tests/sql/setup.sql before BEGIN.
-- Quiet psql, stop on errors, UTC, and the extensions the tests use.
\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
SET client_min_messages = warning;
SET timezone = 'UTC';
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
-- pgconductor: the extension, unless `make test-sql-only` installed the scripts as plain SQL.
DO $$ BEGIN
    IF to_regclass('pgconductor.sql_install') IS NULL THEN
        CREATE EXTENSION IF NOT EXISTS pgconductor;
    END IF;
END $$;
RESET pgconductor.fake_now;
-- The tests move time with pgconductor.fake_now: the test clock must be on for this database.
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET pgconductor.test_clock = on', current_database()); END $$;
