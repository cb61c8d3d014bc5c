-- Cron parsing (_cron_parse).
-- Cases: each field's values for "*", values, ranges, steps (*/n, a-b/n, a/n) and lists;
-- month and day names in any case, 7 = Sunday, duplicates merged; 6 fields (seconds first)
-- and the @ shorthands; the day-of-month / day-of-week OR rule only when neither starts with
-- "*"; invalid input per field (out of range, bad step, backwards range, names where none are
-- allowed, garbage, wrong field count, days no chosen month has) raises 22023 with a one-line
-- message naming the field, and a hint.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(30);

CREATE FUNCTION pg_temp.p(p_cron text) RETURNS pgconductor.cron_spec LANGUAGE sql AS $$ SELECT pgconductor._cron_parse(p_cron) $$;

SELECT is(pg_temp.p('* * * * *'),
          ROW('{0}', ARRAY(SELECT generate_series(0, 59)), ARRAY(SELECT generate_series(0, 23)),
              ARRAY(SELECT generate_series(1, 31)), ARRAY(SELECT generate_series(1, 12)), '{0,1,2,3,4,5,6}', false)::pgconductor.cron_spec,
          'five stars: every minute at second 0');
SELECT is((pg_temp.p('*/15 * * * *')).minutes, '{0,15,30,45}', 'a step over the whole range');
SELECT is((pg_temp.p('1-10/3 * * * *')).minutes, '{1,4,7,10}', 'a step over a range');
SELECT is((pg_temp.p('50/4 * * * *')).minutes, '{50,54,58}', 'a/n runs from a to the end');
SELECT is((pg_temp.p('5,1,5,3-4 * * * *')).minutes, '{1,3,4,5}', 'lists are sorted and merged');
SELECT is((pg_temp.p('0 9-17/4 * * *')).hours, '{9,13,17}', 'hours');
SELECT is((pg_temp.p('0 0 1,15,31 * *')).days, '{1,15,31}', 'days of month');
SELECT is((pg_temp.p('0 0 * jan,Mar-MAY,12 *')).months, '{1,3,4,5,12}', 'month names in any case, with numbers');
SELECT is((pg_temp.p('0 0 * * Mon-fri')).weekdays, '{1,2,3,4,5}', 'day names in any case');
SELECT is((pg_temp.p('0 0 * * 7')).weekdays, '{0}', '7 is Sunday');
SELECT is((pg_temp.p('0 0 * * 5-7,sun')).weekdays, '{0,5,6}', '5-7 and SUN: Sunday once');
SELECT is((pg_temp.p('*/20 */30 4 * * *')).seconds, '{0,20,40}', 'six fields: the first is seconds');
SELECT is((pg_temp.p('*/20 */30 4 * * *')).minutes, '{0,30}', 'six fields: then minutes');
SELECT is(pg_temp.p('@daily'), pg_temp.p('0 0 * * *'), '@daily');
SELECT is(pg_temp.p('  @HOURLY '), pg_temp.p('0 * * * *'), '@hourly, in any case and spacing');
SELECT is(ARRAY[(pg_temp.p('0 0 1 * mon')).day_or, (pg_temp.p('0 0 */2 * mon')).day_or,
                (pg_temp.p('0 0 1 * *')).day_or, (pg_temp.p('0 0 * * 1')).day_or],
          ARRAY[true, false, false, false], 'day-of-month OR day-of-week only when neither starts with *');

-- Bad input: one line naming the field, SQLSTATE 22023.
SELECT throws_ok($$SELECT pgconductor._cron_parse('61 * * * *')$$, '22023',
                 'invalid cron minute field ''61'': 61 is outside 0-59', 'minute out of range');
SELECT throws_ok($$SELECT pgconductor._cron_parse('0 24 * * *')$$, '22023',
                 'invalid cron hour field ''24'': 24 is outside 0-23', 'hour out of range');
SELECT throws_ok($$SELECT pgconductor._cron_parse('0 0 0 * *')$$, '22023',
                 'invalid cron day-of-month field ''0'': 0 is outside 1-31', 'day 0');
SELECT throws_ok($$SELECT pgconductor._cron_parse('0 0 * 13 *')$$, '22023',
                 'invalid cron month field ''13'': 13 is outside 1-12', 'month 13');
SELECT throws_ok($$SELECT pgconductor._cron_parse('0 0 * * 8')$$, '22023',
                 'invalid cron day-of-week field ''8'': 8 is outside 0-7', 'weekday 8');
SELECT throws_ok($$SELECT pgconductor._cron_parse('60 * * * * *')$$, '22023',
                 'invalid cron second field ''60'': 60 is outside 0-59', 'second out of range');
SELECT throws_ok($$SELECT pgconductor._cron_parse('*/0 * * * *')$$, '22023',
                 'invalid cron minute field ''*/0'': step 0 is outside 1-60', 'step 0');
SELECT throws_ok($$SELECT pgconductor._cron_parse('0 0 * * fri-mon')$$, '22023',
                 'invalid cron day-of-week field ''fri-mon'': range ''fri-mon'' runs backwards', 'a backwards range');
SELECT throws_ok($$SELECT pgconductor._cron_parse('0 0 mon * *')$$, '22023',
                 'invalid cron day-of-month field ''mon'': ''mon'' is not a number', 'names only in month and weekday fields');
SELECT throws_ok($$SELECT pgconductor._cron_parse('0 0 * juli *')$$, '22023',
                 'invalid cron month field ''juli'': ''juli'' is not a number or a name', 'an unknown month name');
SELECT throws_ok($$SELECT pgconductor._cron_parse('1,,2 * * * *')$$, '22023',
                 'invalid cron minute field ''1,,2'': '''' is not *, a value, a range or a step', 'an empty list element');
SELECT throws_ok($$SELECT pgconductor._cron_parse('* * * *')$$, '22023',
                 'invalid cron expression ''* * * *'': 4 fields, not 5 or 6', 'four fields');
SELECT throws_ok($$SELECT pgconductor._cron_parse('0 0 30,31 2 *')$$, '22023',
                 'invalid cron day-of-month field ''30,31'': no chosen month has day 30', 'a day February never has');

-- The hint names the field's range.
CREATE FUNCTION pg_temp.hint(p_cron text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE v_hint text;
BEGIN
    PERFORM pgconductor._cron_parse(p_cron);
    RETURN NULL;
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS v_hint = PG_EXCEPTION_HINT;
    RETURN v_hint;
END $$;
SELECT is(pg_temp.hint('0 0 * * x'),
          'The day-of-week field takes 0-7 (0 and 7 are Sunday) or SUN-SAT: *, a value, a range a-b, a step */n or a-b/n, or a list of these.',
          'the hint says what the field takes');

SELECT * FROM finish();
ROLLBACK;
