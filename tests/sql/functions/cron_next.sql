-- The next occurrence of a cron expression (_cron_next), away from DST.
-- Cases: strictly after the given instant (whole and fractional seconds); steps, lists and
-- weekday ranges; month ends (31 skips the shorter months), February 29 (every 4 years, 8
-- across 2100), year ends; the day-of-month OR day-of-week rule and the AND rule when one
-- starts with "*"; six fields (seconds); zones with whole and half-hour offsets.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(22);

CREATE FUNCTION pg_temp.nxt(p_cron text, p_after timestamptz, p_tz text DEFAULT 'UTC') RETURNS timestamptz
LANGUAGE sql AS $$ SELECT pgconductor._cron_next(pgconductor._cron_parse(p_cron), p_tz, p_after) $$;

SELECT is(pg_temp.nxt(c, a::timestamptz, z), e::timestamptz, format('%s after %s in %s', c, a, z))
  FROM (VALUES
    ('*/5 * * * *',      '2025-01-01 10:02:30+00', 'UTC', '2025-01-01 10:05:00+00'),
    ('*/5 * * * *',      '2025-01-01 10:05:00+00', 'UTC', '2025-01-01 10:10:00+00'),  -- strictly after
    ('0 9,17 * * *',     '2025-01-01 10:00:00+00', 'UTC', '2025-01-01 17:00:00+00'),
    ('0 9,17 * * *',     '2025-01-01 17:00:00+00', 'UTC', '2025-01-02 09:00:00+00'),
    ('0 0 31 * *',       '2025-01-31 00:00:00+00', 'UTC', '2025-03-31 00:00:00+00'),  -- no 31 February
    ('0 0 31 * *',       '2025-03-31 00:00:00+00', 'UTC', '2025-05-31 00:00:00+00'),  -- no 31 April
    ('0 0 31 4,5 *',     '2025-01-01 00:00:00+00', 'UTC', '2025-05-31 00:00:00+00'),
    ('0 0 29 2 *',       '2025-01-01 00:00:00+00', 'UTC', '2028-02-29 00:00:00+00'),
    ('0 0 29 2 *',       '2096-03-01 00:00:00+00', 'UTC', '2104-02-29 00:00:00+00'),  -- 2100 is no leap year
    ('0 0 1 * *',        '2025-12-15 00:00:00+00', 'UTC', '2026-01-01 00:00:00+00'),
    ('59 23 31 12 *',    '2025-12-31 23:59:00+00', 'UTC', '2026-12-31 23:59:00+00'),
    ('30 8 * * mon-fri', '2025-06-06 09:00:00+00', 'UTC', '2025-06-09 08:30:00+00'),  -- Friday to Monday
    ('0 0 13 * fri',     '2025-06-01 00:00:00+00', 'UTC', '2025-06-06 00:00:00+00'),  -- OR: a Friday
    ('0 0 13 * fri',     '2025-06-06 00:00:00+00', 'UTC', '2025-06-13 00:00:00+00'),  -- both
    ('0 0 1 * mon',      '2025-09-29 00:00:00+00', 'UTC', '2025-10-01 00:00:00+00'),  -- OR: the 1st, a Wednesday
    ('0 0 */2 * mon',    '2025-09-01 00:00:00+00', 'UTC', '2025-09-15 00:00:00+00'),  -- AND: an odd day and a Monday
    ('*/20 * * * * *',   '2025-01-01 10:00:05+00', 'UTC', '2025-01-01 10:00:20+00'),
    ('30 59 23 * * *',   '2025-12-31 23:59:30+00', 'UTC', '2026-01-01 23:59:30+00'),
    ('* * * * * *',      '2025-01-01 10:00:00.5+00', 'UTC', '2025-01-01 10:00:01+00'),
    ('0 9 * * *',        '2025-01-01 00:00:00+00', 'Asia/Tokyo', '2025-01-02 00:00:00+00'),    -- 09:00 +09 is now
    ('0 9 * * *',        '2025-01-01 00:00:00+00', 'Asia/Kolkata', '2025-01-01 03:30:00+00'),  -- +05:30
    ('@yearly',          '2025-01-01 00:00:00+00', 'UTC', '2026-01-01 00:00:00+00')
  ) AS t(c, a, z, e);

SELECT * FROM finish();
ROLLBACK;
