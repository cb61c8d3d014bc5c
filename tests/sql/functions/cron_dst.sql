-- Next occurrences across daylight-saving changes (_cron_next), in
-- Europe/Berlin (2025-03-30 02:00 CET -> 03:00 CEST; 2025-10-26 03:00 CEST -> 02:00 CET) and
-- America/New_York (2025-03-09 02:00 EST -> 03:00 EDT; 2025-11-02 02:00 EDT -> 01:00 EST).
-- The rule (_cron_instant): a wall-clock time the clocks skip runs at the first instant after
-- the gap (03:00 local); one they show twice runs the first time only, unless the hour field
-- allows every hour: such a schedule keeps its pace through both passes of the repeated hour.
-- Cases: a daily job inside the skipped hour runs once that day, at 03:00; a daily job inside
-- the repeated hour runs once that day, in its first pass; the days around run at their usual
-- wall-clock time; an hourly job runs in both passes of the repeated hour (25 runs that day)
-- and an every-minute one never stops; times in the gap collapse to one run; asked from
-- inside the second pass, the first pass of a daily job counts as done. Beyond the two:
-- a gap at midnight (America/Santiago) and a half-hour change (Australia/Lord_Howe).
\i tests/sql/setup.sql
BEGIN;
SELECT plan(17);

-- The p_n occurrences after p_after.
CREATE FUNCTION pg_temp.seq(p_cron text, p_tz text, p_after timestamptz, p_n integer) RETURNS timestamptz[]
LANGUAGE plpgsql AS $$
DECLARE v_at timestamptz := p_after; v_out timestamptz[] := '{}';
BEGIN
    FOR i IN 1..p_n LOOP
        v_at := pgconductor._cron_next(pgconductor._cron_parse(p_cron), p_tz, v_at);
        v_out := v_out || v_at;
    END LOOP;
    RETURN v_out;
END $$;

-- Europe/Berlin, spring forward: 02:30 does not exist on 30 March; it runs at 03:00 CEST.
SELECT is(pg_temp.seq('30 2 * * *', 'Europe/Berlin', '2025-03-28 00:00+00', 4),
          ARRAY['2025-03-28 01:30+00', '2025-03-29 01:30+00', '2025-03-30 01:00+00', '2025-03-31 00:30+00']::timestamptz[],
          'Berlin spring: daily 02:30 runs once on the day, at 03:00 CEST');
SELECT is(pg_temp.seq('*/30 * * * *', 'Europe/Berlin', '2025-03-30 00:00+00', 3),
          ARRAY['2025-03-30 00:30+00', '2025-03-30 01:00+00', '2025-03-30 01:30+00']::timestamptz[],
          'Berlin spring: 02:00, 02:30 and 03:00 collapse into one run at 03:00 CEST');
-- Europe/Berlin, fall back: 02:30 happens twice on 26 October; it runs at the first (CEST).
SELECT is(pg_temp.seq('30 2 * * *', 'Europe/Berlin', '2025-10-25 00:00+00', 3),
          ARRAY['2025-10-25 00:30+00', '2025-10-26 00:30+00', '2025-10-27 01:30+00']::timestamptz[],
          'Berlin fall: daily 02:30 runs once on the day, the first time');
SELECT is(pg_temp.seq('0 * * * *', 'Europe/Berlin', '2025-10-25 23:30+00', 4),
          ARRAY['2025-10-26 00:00+00', '2025-10-26 01:00+00', '2025-10-26 02:00+00', '2025-10-26 03:00+00']::timestamptz[],
          'Berlin fall: hourly at 02:00 CEST, 02:00 CET, 03:00 CET: every hour of the 25');
SELECT is((SELECT count(*)::integer FROM unnest(pg_temp.seq('0 * * * *', 'Europe/Berlin', '2025-10-25 21:59+00', 30)) AS t
            WHERE t < '2025-10-26 23:00+00'),
          25, 'Berlin fall: an hourly job runs 25 times on the 25-hour day');
SELECT is((SELECT count(*)::integer FROM unnest(pg_temp.seq('* * * * *', 'Europe/Berlin', '2025-10-25 23:59:30+00', 200)) AS t
            WHERE t < '2025-10-26 02:00+00'),
          120, 'Berlin fall: an every-minute job runs each minute of the two real hours from 02:00 CEST');
SELECT is(pg_temp.seq('0 12 * * *', 'Europe/Berlin', '2025-10-25 00:00+00', 2),
          ARRAY['2025-10-25 10:00+00', '2025-10-26 11:00+00']::timestamptz[],
          'Berlin fall: noon moves by an hour in UTC');

-- America/New_York, spring forward: 02:30 does not exist on 9 March; it runs at 03:00 EDT.
SELECT is(pg_temp.seq('30 2 * * *', 'America/New_York', '2025-03-08 00:00+00', 3),
          ARRAY['2025-03-08 07:30+00', '2025-03-09 07:00+00', '2025-03-10 06:30+00']::timestamptz[],
          'New York spring: daily 02:30 runs once on the day, at 03:00 EDT');
SELECT is(pg_temp.seq('15 2 * * * ', 'America/New_York', '2025-03-09 06:59:59+00', 1),
          ARRAY['2025-03-09 07:00+00']::timestamptz[],
          'New York spring: one second before the gap, 02:15 is due at its end');
-- America/New_York, fall back: 01:30 happens twice on 2 November; it runs at the first (EDT).
SELECT is(pg_temp.seq('30 1 * * *', 'America/New_York', '2025-11-01 00:00+00', 3),
          ARRAY['2025-11-01 05:30+00', '2025-11-02 05:30+00', '2025-11-03 06:30+00']::timestamptz[],
          'New York fall: daily 01:30 runs once on the day, the first time');
SELECT is(pg_temp.seq('30 2 * * *', 'America/New_York', '2025-11-01 00:00+00', 3),
          ARRAY['2025-11-01 06:30+00', '2025-11-02 07:30+00', '2025-11-03 07:30+00']::timestamptz[],
          'New York fall: daily 02:30 (shown once) runs once each day');
SELECT is(pg_temp.seq('0 * * * *', 'America/New_York', '2025-11-02 03:30+00', 4),
          ARRAY['2025-11-02 04:00+00', '2025-11-02 05:00+00', '2025-11-02 06:00+00', '2025-11-02 07:00+00']::timestamptz[],
          'New York fall: hourly at 00:00 and 01:00 EDT, 01:00 and 02:00 EST');
-- Asked from inside the second pass (01:30 EST): the first pass of 01:45 is over.
SELECT is(pg_temp.seq('45 1 * * *', 'America/New_York', '2025-11-02 06:30+00', 1),
          ARRAY['2025-11-03 06:45+00']::timestamptz[],
          'New York fall: from the second pass, 01:45 waits for the next day');
SELECT is(pg_temp.seq('*/20 * * * *', 'America/New_York', '2025-11-02 06:30+00', 2),
          ARRAY['2025-11-02 06:40+00', '2025-11-02 07:00+00']::timestamptz[],
          'New York fall: from the second pass, every 20 minutes goes on at 01:40 EST');
SELECT is(pg_temp.seq('*/20 1 * * *', 'America/New_York', '2025-11-02 06:30+00', 1),
          ARRAY['2025-11-03 06:00+00']::timestamptz[],
          'New York fall: every 20 minutes of the 1 AM hour only ran in its first pass');

SELECT is(pg_temp.seq('0 0 * * *', 'America/Santiago', '2025-09-06 12:00+00', 2),
          ARRAY['2025-09-07 04:00+00', '2025-09-08 03:00+00']::timestamptz[],
          'Santiago: midnight does not exist on 7 September; the daily run is at 01:00 -03');
SELECT is(pg_temp.seq('15 2 * * *', 'Australia/Lord_Howe', '2025-10-04 12:00+00', 2),
          ARRAY['2025-10-04 15:30+00', '2025-10-05 15:15+00']::timestamptz[],
          'Lord Howe: 02:15 falls in a half-hour gap and runs at 02:30 +11');

SELECT * FROM finish();
ROLLBACK;
