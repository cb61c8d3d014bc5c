-- Queues are LIST partitions of pgconductor.executions, created on demand and dropped with
-- drop_queue(). The partition of queue q is pgconductor."executions_q".

-- Trigger on queues: INSERT creates the partition, DELETE drops it, UPDATE is refused.
-- Takes the locks CREATE/DROP TABLE take on pgconductor.executions.
CREATE FUNCTION pgconductor._queues_partition_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        EXECUTE format('CREATE TABLE pgconductor.%I PARTITION OF pgconductor.executions FOR VALUES IN (%L)',
                       'executions_' || NEW.name, NEW.name);
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        EXECUTE format('DROP TABLE IF EXISTS pgconductor.%I', 'executions_' || OLD.name);
        RETURN OLD;
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
-- Raises 22023 for an invalid name. Returns true when this call created it.
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
    INSERT INTO pgconductor.queues (name) VALUES (p_queue) ON CONFLICT (name) DO NOTHING;
    GET DIAGNOSTICS v_created = ROW_COUNT;
    RETURN v_created;
END
$$;

-- Drops queue p_queue and its partition. Refuses the default queue (42501) and a queue that
-- still holds executions (55006) unless p_force. Returns false when the queue did not exist.
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
    IF v_live > 0 AND NOT p_force THEN
        RAISE EXCEPTION 'queue "%" still holds % execution(s)', p_queue, v_live
            USING ERRCODE = '55006', HINT = 'Wait for them to finish, cancel them, or call drop_queue(queue, p_force => true).';
    END IF;
    DELETE FROM pgconductor.queues WHERE name = p_queue;
    RETURN true;
END
$$;
