-- get_executions(): a claim writes only when it takes something.
-- Cases: an empty claim by an unknown orchestrator registers nothing; an empty claim by an
-- expired orchestrator leaves it expired; a claim that takes rows registers an unknown
-- orchestrator, revives an expired one (and its recovery bookkeeping) and a stopped one;
-- a live orchestrator's row is left as it was.
\i tests/sql/setup.sql
BEGIN;
SELECT plan(9);

SET pgconductor.fake_now = '2025-03-01 12:00:00';
SELECT pgconductor.register_task('cw', 'cwq');

SELECT is((SELECT count(*) FROM pgconductor.get_executions(ARRAY['cw'], '00000000-0000-0000-0000-0000000000c1', 10, 'cwq')),
          0::bigint, 'an empty queue: nothing claimed');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-0000000000c1'),
          'an empty claim does not register its orchestrator');

INSERT INTO pgconductor.orchestrators (id, last_heartbeat_at, expired_at, drained)
VALUES ('00000000-0000-0000-0000-0000000000c2', '2025-03-01 11:00:00', '2025-03-01 11:30:00', true),
       ('00000000-0000-0000-0000-0000000000c3', '2025-03-01 11:00:00', NULL, false),
       ('00000000-0000-0000-0000-0000000000c4', '2025-03-01 11:50:00', NULL, false);
UPDATE pgconductor.orchestrators SET stopped_at = '2025-03-01 11:40:00' WHERE id = '00000000-0000-0000-0000-0000000000c3';

SELECT pgconductor.get_executions(ARRAY['cw'], '00000000-0000-0000-0000-0000000000c2', 10, 'cwq');
SELECT is((SELECT expired_at FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-0000000000c2'),
          '2025-03-01 11:30:00'::timestamptz, 'an empty claim leaves an expired orchestrator expired');

SELECT pgconductor.invoke('cw', '{}') FROM generate_series(1, 4);
SELECT is((SELECT count(*) FROM pgconductor.get_executions(ARRAY['cw'], '00000000-0000-0000-0000-0000000000c1', 1, 'cwq')),
          1::bigint, 'a claim takes a row');
SELECT is((SELECT last_heartbeat_at FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-0000000000c1'),
          '2025-03-01 12:00:00'::timestamptz, 'a claim that takes rows registers its orchestrator');

SELECT pgconductor.get_executions(ARRAY['cw'], '00000000-0000-0000-0000-0000000000c2', 1, 'cwq');
SELECT is((SELECT (expired_at, drained, last_heartbeat_at)::text FROM pgconductor.orchestrators
            WHERE id = '00000000-0000-0000-0000-0000000000c2'),
          '(,f,"2025-03-01 12:00:00+00")', 'a claim that takes rows revives an expired orchestrator');

SELECT pgconductor.get_executions(ARRAY['cw'], '00000000-0000-0000-0000-0000000000c3', 1, 'cwq');
SELECT is((SELECT stopped_at FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-0000000000c3'),
          NULL, 'and a stopped one');

SELECT pgconductor.get_executions(ARRAY['cw'], '00000000-0000-0000-0000-0000000000c4', 1, 'cwq');
SELECT is((SELECT last_heartbeat_at FROM pgconductor.orchestrators WHERE id = '00000000-0000-0000-0000-0000000000c4'),
          '2025-03-01 11:50:00'::timestamptz, 'a live orchestrator''s row is left as it was');
SELECT is((SELECT count(*) FROM pgconductor.executions WHERE queue = 'cwq' AND locked_by IS NOT NULL),
          4::bigint, 'every claimed row is held');

SELECT * FROM finish();
ROLLBACK;
