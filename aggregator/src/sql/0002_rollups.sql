-- Sluice schema, version 2: the full rollups (issue 5). Runs after
-- sketch_functions.sql, in the same transaction, under `aggregator migrate`.
--
-- Column order and merge rules are mirrored in src/schema.rs (ZONE_COLUMNS,
-- SECURITY_COLUMNS); a test compares them with this file's tables.

-- The foundation's counters-only table had no production data behind it.
DROP TABLE IF EXISTS sluice_rollup_minute;

-- Per (zone, minute): everything a customer's dashboard shows. Maps are
-- JSON objects of counts; `latency` maps logarithmic buckets to counts
-- (sluice_quantile reads them); top_* keep the 32 largest keys.
CREATE TABLE sluice_rollup_minute (
    zone                     text        NOT NULL,
    bucket                   timestamptz NOT NULL,
    requests                 bigint      NOT NULL DEFAULT 0,
    requests_cached          bigint      NOT NULL DEFAULT 0,
    requests_encrypted       bigint      NOT NULL DEFAULT 0,
    bytes                    bigint      NOT NULL DEFAULT 0,
    bytes_cached             bigint      NOT NULL DEFAULT 0,
    bytes_encrypted          bigint      NOT NULL DEFAULT 0,
    pageviews                bigint      NOT NULL DEFAULT 0,
    threats                  bigint      NOT NULL DEFAULT 0,
    requests_status          jsonb       NOT NULL DEFAULT '{}',
    bytes_status             jsonb       NOT NULL DEFAULT '{}',
    requests_content_type    jsonb       NOT NULL DEFAULT '{}',
    bytes_content_type       jsonb       NOT NULL DEFAULT '{}',
    requests_country         jsonb       NOT NULL DEFAULT '{}',
    bytes_country            jsonb       NOT NULL DEFAULT '{}',
    requests_tls             jsonb       NOT NULL DEFAULT '{}',
    requests_method          jsonb       NOT NULL DEFAULT '{}',
    requests_client_class    jsonb       NOT NULL DEFAULT '{}',
    pageviews_search_engine  jsonb       NOT NULL DEFAULT '{}',
    threats_type             jsonb       NOT NULL DEFAULT '{}',
    threats_country          jsonb       NOT NULL DEFAULT '{}',
    latency                  jsonb       NOT NULL DEFAULT '{}',
    uniques                  hll(14, 5, -1, 1) NOT NULL DEFAULT hll_empty(14, 5, -1, 1),
    top_paths                jsonb       NOT NULL DEFAULT '{}',
    top_referers             jsonb       NOT NULL DEFAULT '{}',
    top_client_ips           jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (zone, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE sluice_rollup_hour (LIKE sluice_rollup_minute INCLUDING DEFAULTS,
    PRIMARY KEY (zone, bucket)) PARTITION BY RANGE (bucket);
CREATE TABLE sluice_rollup_day (LIKE sluice_rollup_minute INCLUDING DEFAULTS,
    PRIMARY KEY (zone, bucket)) PARTITION BY RANGE (bucket);

-- Per (attack type, minute), for the zones this shard owns: the security
-- view merges these across shards.
CREATE TABLE sluice_security_minute (
    attack_type      text        NOT NULL,
    bucket           timestamptz NOT NULL,
    requests         bigint      NOT NULL DEFAULT 0,
    zones            hll(14, 5, -1, 1) NOT NULL DEFAULT hll_empty(14, 5, -1, 1),
    requests_country jsonb       NOT NULL DEFAULT '{}',
    top_client_ips   jsonb       NOT NULL DEFAULT '{}',
    top_paths        jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (attack_type, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE sluice_security_hour (LIKE sluice_security_minute INCLUDING DEFAULTS,
    PRIMARY KEY (attack_type, bucket)) PARTITION BY RANGE (bucket);
CREATE TABLE sluice_security_day (LIKE sluice_security_minute INCLUDING DEFAULTS,
    PRIMARY KEY (attack_type, bucket)) PARTITION BY RANGE (bucket);

-- How fresh each partition's data is in this shard: every message Kafka
-- had for the partition up to this instant is reflected here. The API's
-- data_complete_until is the minimum over partitions.
ALTER TABLE sluice_positions ADD COLUMN complete_until timestamptz;

-- Records that arrived later than the configured lateness, by minute, so
-- that an operator can see what a dashboard is missing.
CREATE TABLE sluice_late (
    bucket  timestamptz NOT NULL PRIMARY KEY,
    records bigint      NOT NULL
);
