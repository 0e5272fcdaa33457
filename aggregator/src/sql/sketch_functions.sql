-- Merging and reading the JSON sketches of src/sketch/ in SQL, exactly as
-- the Rust code does (tests/sketch_sql.rs checks that they agree). Safe to
-- run again: every object is created or replaced.
--
-- A "counts" value is a jsonb object of non-negative integer counts:
-- latency histograms (bucket index or "z" → count) and top-N summaries
-- (key → count). NULL stands for the empty object.

-- Key-wise sum of two counts objects: Latency::merge, and the first half of
-- TopN::merge. An empty (or NULL) side adds nothing, so the other is the
-- sum as it is: that spares the key-by-key walk for the first row of every
-- sluice_sum_counts group (it starts from '{}') — about 16 µs a call for
-- 9 keys.
CREATE OR REPLACE FUNCTION sluice_add_counts(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN b IS NULL OR b = '{}'::jsonb THEN coalesce(a, '{}'::jsonb)
        WHEN a IS NULL OR a = '{}'::jsonb THEN b
        ELSE a || coalesce(
            (SELECT jsonb_object_agg(key, coalesce((a ->> key)::bigint, 0) + value::bigint)
               FROM jsonb_each(b)),
            '{}'::jsonb)
    END
$$;

-- The key-wise sum of a column: sluice_add_counts over rows.
CREATE OR REPLACE AGGREGATE sluice_sum_counts(jsonb) (
    SFUNC = sluice_add_counts,
    STYPE = jsonb,
    INITCOND = '{}',
    COMBINEFUNC = sluice_add_counts,
    PARALLEL = SAFE
);

-- The k largest entries: count descending, ties by key ascending, bytewise
-- (COLLATE "C", as Rust compares strings). The second half of TopN::merge.
CREATE OR REPLACE FUNCTION sluice_top(a jsonb, k integer) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb)
      FROM (SELECT key, value
              FROM jsonb_each(a)
             ORDER BY value::bigint DESC, key COLLATE "C"
             LIMIT k) AS top
$$;

-- Quantile q (0 to 1) of a latency histogram, in microseconds: the value
-- that represents the bucket holding the item of 0-based rank
-- floor(q * (n - 1)); 0 for the "z" bucket, else 2 * gamma^i / (gamma + 1)
-- with gamma = (1 + alpha) / (1 - alpha), alpha = 0.01 — Latency::quantile,
-- with the same floating-point operations. NULL when the histogram is
-- empty or q is outside [0, 1].
CREATE OR REPLACE FUNCTION sluice_quantile(buckets jsonb, q double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH bucket AS (
        SELECT CASE WHEN key = 'z' THEN -1 ELSE key::integer END AS i,
               value::bigint AS n
          FROM jsonb_each(buckets)
    ), running AS (
        SELECT i,
               sum(n) OVER (ORDER BY i) AS through,
               sum(n) OVER () AS total
          FROM bucket
    ), accuracy AS (
        SELECT (1 + 0.01::float8) / (1 - 0.01::float8) AS gamma
    )
    SELECT CASE WHEN i < 0 THEN 0::float8
                ELSE 2 * power(gamma, i::float8) / (gamma + 1) END
      FROM running, accuracy
     WHERE q >= 0 AND q <= 1
       AND through > floor(q * (total - 1)::float8)
     ORDER BY i
     LIMIT 1
$$;
