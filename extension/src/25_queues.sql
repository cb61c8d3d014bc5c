-- Queues are LIST partitions of pgconductor.executions, created on demand and dropped with
-- drop_queue(). The partition of queue q is pgconductor."executions_q$".

-- The partition that holds queue p_queue's executions. The "$", which queue names never
-- contain, ends every partition name: index names PostgreSQL makes up end in letters (_pkey,
-- _idx, _key), so no queue's partition can collide with another's index (queue "pkey" or
-- "default_pkey" used to fail with 42P07). Inlined.
CREATE FUNCTION pgconductor._partition_name(p_queue text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN 'executions_' || p_queue || '$';

-- Trigger on queues: INSERT creates the partition, DELETE drops it, a rename is refused
-- (the other columns are settings: pause_queue, set_fair_share).
-- Takes the locks CREATE/DROP TABLE take on pgconductor.executions.
CREATE FUNCTION pgconductor._queues_partition_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('CREATE TABLE pgconductor.%I PARTITION OF pgconductor.executions FOR VALUES IN (%L)',
                       pgconductor._partition_name(NEW.name), NEW.name);
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('DROP TABLE IF EXISTS pgconductor.%I', pgconductor._partition_name(OLD.name));
        RETURN OLD;
    ELSIF NEW.name = OLD.name THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'queues cannot be renamed'
        USING ERRCODE = '55000', HINT = 'Create a new queue with create_queue() and drop the old one with drop_queue().';
END
$$;

CREATE TRIGGER queues_partition_insert AFTER INSERT ON pgconductor.queues
    FOR EACH ROW EXECUTE FUNCTION pgconductor._queues_partition_trigger();
CREATE TRIGGER queues_partition_delete AFTER DELETE ON pgconductor.queues
    FOR EACH ROW EXECUTE FUNCTION pgconductor._queues_partition_trigger();
CREATE TRIGGER queues_no_rename BEFORE UPDATE ON pgconductor.queues
    FOR EACH ROW EXECUTE FUNCTION pgconductor._queues_partition_trigger();

INSERT INTO pgconductor.queues (name) VALUES ('default');

-- Makes sure queue p_queue exists (validating its name); cheap when it does.
-- Raises 22023 for an invalid name, 54000 when _max_queues() exist already. Returns true when
-- this call created it.
CREATE FUNCTION pgconductor.create_queue(p_queue text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_created boolean;
BEGIN
    PERFORM pgconductor._assert_queue_name(p_queue);
    IF EXISTS (SELECT 1 FROM pgconductor.queues WHERE name = p_queue) THEN
        RETURN false;
    END IF;
    IF (SELECT count(*) FROM pgconductor.queues) >= pgconductor._max_queues() THEN
        RAISE EXCEPTION 'cannot create queue %: the database holds % queues, the most it may', pgconductor._show(p_queue), pgconductor._max_queues()
            USING ERRCODE = '54000', HINT = 'Drop unused queues with drop_queue(). For many tenants, use one queue and a key per tenant, not a queue each.';
    END IF;
    INSERT INTO pgconductor.queues (name) VALUES (p_queue) ON CONFLICT (name) DO NOTHING;
    GET DIAGNOSTICS v_created = ROW_COUNT;
    RETURN v_created;
END
$$;

-- Drops queue p_queue and its partition. Refuses the default queue (42501) and a queue that
-- still holds executions (55006) unless p_force is true (NULL counts as false: an argument that
-- destroys executions is never implied). Forced, its live executions end cancelled (kept in
-- finished_executions; running ones signalled). Returns false when the queue did not exist.
CREATE FUNCTION pgconductor.drop_queue(p_queue text, p_force boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_live bigint;
BEGIN
    PERFORM pgconductor._assert_queue_name(p_queue);
    IF p_queue = 'default' THEN
        RAISE EXCEPTION 'the default queue cannot be dropped'
            USING ERRCODE = '42501', HINT = 'Drop the other queues; "default" always exists.';
    END IF;
    PERFORM 1 FROM pgconductor.queues WHERE name = p_queue FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT count(*) INTO v_live FROM pgconductor.executions WHERE queue = p_queue;
    IF v_live > 0 AND p_force IS NOT TRUE THEN
        RAISE EXCEPTION 'queue % still holds % execution(s)', quote_literal(p_queue), v_live
            USING ERRCODE = '55006', HINT = 'Wait for them to finish, cancel them, or call drop_queue(queue, p_force => true).';
    END IF;
    IF v_live > 0 THEN
        -- Forced: the live executions end cancelled, kept in finished_executions like any other
        -- end; running ones are signalled so their handlers stop.
        PERFORM pgconductor._signal(e.locked_by, 'cancel', e.id)
           FROM pgconductor.executions AS e WHERE e.queue = p_queue AND e.locked_by IS NOT NULL;
        PERFORM pgconductor._finish(e.id, p_queue, 'cancelled', format('queue %s was dropped', quote_literal(p_queue)))
           FROM pgconductor.executions AS e WHERE e.queue = p_queue;
    END IF;
    DELETE FROM pgconductor.queues WHERE name = p_queue;
    RETURN true;
END
$$;
