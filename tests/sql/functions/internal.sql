-- Internal helpers: the clock, windows, backoff, ids and the validators.
-- Cases: _now() follows pgconductor.fake_now and falls back to now(); _in_window for plain,
-- overnight and zoned windows; _backoff doubles from the base, stays in [d/2, d] and never
-- passes the cap (also for huge attempt numbers); _uuid7 is version 7 and time-ordered;
-- the validators agree with the tables' inline CHECK constraints.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(16);

SET pgconductor.fake_now = '2030-01-02 03:04:05+00';
SELECT is(pgconductor._now(), '2030-01-02 03:04:05+00'::timestamptz, '_now() follows fake_now');
RESET pgconductor.fake_now;
SELECT is(pgconductor._now(), now(), '_now() is the transaction time otherwise');

SELECT ok(pgconductor._in_window('09:00', '17:00', 'UTC', '2030-01-01 09:00+00'), 'window start is inclusive');
SELECT ok(NOT pgconductor._in_window('09:00', '17:00', 'UTC', '2030-01-01 17:00+00'), 'window end is exclusive');
SELECT ok(pgconductor._in_window('22:00', '06:00', 'UTC', '2030-01-01 00:30+00'), 'overnight window after midnight');
SELECT ok(NOT pgconductor._in_window('22:00', '06:00', 'UTC', '2030-01-01 21:59+00'), 'overnight window before its start');
SELECT ok(pgconductor._in_window('09:00', '10:00', 'America/New_York', '2030-07-01 13:30+00'), 'zoned window (09:30 in New York)');
SELECT ok(pgconductor._in_window(NULL, NULL, 'UTC', now()), 'no window means always');

SELECT ok(bool_and(d BETWEEN interval '2 seconds' AND interval '4 seconds'),
          'attempt 3 with base 1 s: d = 4 s, drawn from [2 s, 4 s]')
  FROM (SELECT pgconductor._backoff(3, '1 second', '1 hour') AS d FROM generate_series(1, 200)) AS s;
SELECT ok(bool_and(d BETWEEN interval '30 seconds' AND interval '60 seconds'), 'capped at 60 s from attempt 7 on')
  FROM (SELECT pgconductor._backoff(g, '1 second', '60 seconds') AS d FROM generate_series(7, 200) AS g) AS s;
SELECT ok(pgconductor._backoff(1000000, '1 second', '1 day') <= interval '1 day', 'huge attempt numbers do not overflow');
SELECT ok(count(DISTINCT pgconductor._backoff(5, '1 second', '1 hour')) > 50, 'the delay is jittered')
  FROM generate_series(1, 100);

SET pgconductor.fake_now = '2030-01-01 00:00:00.001+00';
SELECT pgconductor._uuid7() AS early \gset
SET pgconductor.fake_now = '2030-01-01 00:00:00.002+00';
SELECT pgconductor._uuid7() AS late \gset
SELECT is(substr(:'late', 15, 1), '7', '_uuid7 is a version 7 uuid');
SELECT ok(:'early'::uuid < :'late'::uuid, '_uuid7 orders by time');

-- The validators and the inline CHECK constraints accept exactly the same values.
CREATE TEMP TABLE samples (v text);
INSERT INTO samples VALUES ('ok'), ('a-b_c.d'), (''), (' x'), ('x '), (repeat('k', 200)), (repeat('k', 201)),
                           (E'tab\there'), ('Upper'), ('-lead'), ('q1'), (repeat('q', 48)), (repeat('q', 49)), ('a b');
SELECT is((SELECT count(*) FROM samples AS s WHERE pgconductor._valid_task_key(s.v) IS DISTINCT FROM
              (char_length(s.v) BETWEEN 1 AND 200 AND s.v !~ '[[:cntrl:]]' AND s.v = btrim(s.v))),
          0::bigint, 'task keys: _valid_task_key agrees with the executions/tasks CHECK');
SELECT is((SELECT count(*) FROM samples AS s WHERE pgconductor._valid_queue_name(s.v) IS DISTINCT FROM
              (s.v ~ '^[a-z0-9][a-z0-9_-]{0,47}$')),
          0::bigint, 'queue names: _valid_queue_name agrees with the queues/tasks CHECK');

SELECT * FROM finish();
ROLLBACK;
