-- Sluice schema, version 1: per-zone per-minute rollups and the bookkeeping
-- that makes their writes exactly-once. Runs once per shard, in one
-- transaction, under `aggregator migrate`.

CREATE EXTENSION IF NOT EXISTS hll;

-- One row per (zone, minute). Counters only ever grow by addition, so two
-- partial rows merge by adding them.
CREATE TABLE sluice_rollup_minute (
    zone     text        NOT NULL,
    minute   timestamptz NOT NULL,
    requests bigint      NOT NULL,
    bytes    bigint      NOT NULL,
    PRIMARY KEY (zone, minute)
);

-- How far into each Kafka partition this shard's rows reach: every message
-- below next_offset is already reflected here. Written in the same
-- transaction as the rows, and compared-and-set so that a consumer that
-- lost its partition cannot write behind the new owner's back.
CREATE TABLE sluice_positions (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- Which batches this shard has applied, per shipper epoch: the highest seq
-- and a 1024-bit map of the seqs just below it (see src/dedup.rs). A batch
-- Kafka holds twice (a shipper retry, a re-produce) is applied once. Seqs
-- and epochs are u64 on the wire, stored as their two's-complement bigint.
CREATE TABLE sluice_dedup (
    edge_id    text        NOT NULL,
    epoch      bigint      NOT NULL,
    high_seq   bigint      NOT NULL,
    recent     bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (edge_id, epoch)
);

-- API bearer tokens, stored as SHA-256 of the token (tokens are 256 random
-- bits, so a fast hash suffices). Authoritative on the first shard.
CREATE TABLE sluice_tokens (
    sha256     bytea       PRIMARY KEY,
    zones      text[]      NOT NULL DEFAULT '{}',
    security   boolean     NOT NULL DEFAULT false,
    admin      boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
