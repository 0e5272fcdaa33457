-- Citus mode (`citus = true`): run by `aggregator migrate` on the
-- coordinator after the migrations, every time (each step is skipped when
-- already done). Written against Citus's documented API:
-- https://docs.citusdata.com/en/stable/develop/api_udf.html
--
-- * Zone rollups are distributed on `zone` and co-located, so one zone's
--   minute, hour and day rows live on the same worker and a dashboard
--   query is routed to one node.
-- * Security rollups are distributed on `attack_type`.
-- * The bookkeeping (positions, dedup windows, late counts, tokens) is
--   made of reference tables: replicated to every node and writable in the
--   same transaction as the rollups, which is what exactly-once needs.
-- * The SQL merge and read functions are distributed so workers can run
--   them in queries that merge rows (a flush merges in the aggregator).

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sluice_rollup_minute', 'sluice_rollup_hour', 'sluice_rollup_day'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass) THEN
            PERFORM create_distributed_table(t, 'zone', colocate_with => CASE
                WHEN t = 'sluice_rollup_minute' THEN 'default' ELSE 'sluice_rollup_minute' END);
        END IF;
    END LOOP;
    FOREACH t IN ARRAY ARRAY['sluice_security_minute', 'sluice_security_hour', 'sluice_security_day'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass) THEN
            PERFORM create_distributed_table(t, 'attack_type');
        END IF;
    END LOOP;
    FOREACH t IN ARRAY ARRAY['sluice_positions', 'sluice_dedup', 'sluice_late', 'sluice_tokens'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = t::regclass) THEN
            PERFORM create_reference_table(t);
        END IF;
    END LOOP;
    PERFORM create_distributed_function('sluice_add_counts(jsonb, jsonb)');
    PERFORM create_distributed_function('sluice_top(jsonb, integer)');
    PERFORM create_distributed_function('sluice_quantile(jsonb, double precision)');
    PERFORM create_distributed_function('sluice_hll_bits(bytea, integer)');
    PERFORM create_distributed_function('sluice_cardinality(hll)');
END
$$;
