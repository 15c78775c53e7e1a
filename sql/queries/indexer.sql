-- The minute job of the token price index (exchange/indexer.py).

-- name: index_groups
-- The substitution groups of the compute instruments listed now.
SELECT DISTINCT substitution_group FROM instrument WHERE kind = 'compute' ORDER BY substitution_group;

-- name: newest_index_minute
SELECT max(at) FROM price_index;

-- name: index_fills
-- The compute fills of [$1, $2), oldest first.
SELECT i.substitution_group, f.created_at, f.price, f.qty, i.tokens_per_lot
FROM fill f JOIN instrument i ON i.id = f.instrument_id
WHERE i.kind = 'compute' AND f.created_at >= $1 AND f.created_at < $2
ORDER BY f.created_at;

-- name: insert_index_rows
-- The fields of IndexRow, one array each; a (group, minute) already there is kept and not returned.
INSERT INTO price_index (substitution_group, at, value, stale, trades, volume_tokens, notional, computed_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::boolean[], $5::integer[], $6::numeric[],
                     $7::numeric[], $8::timestamptz[])
ON CONFLICT (substitution_group, at) DO NOTHING
RETURNING substitution_group, at, value, stale, trades, volume_tokens, notional, computed_at;

-- name: latest_index_rows
-- The newest row of each group listed now.
SELECT p.* FROM (
    SELECT DISTINCT substitution_group FROM instrument WHERE kind = 'compute'
) AS g
CROSS JOIN LATERAL (
    SELECT substitution_group, at, value, stale, trades, volume_tokens, notional, computed_at FROM price_index
    WHERE substitution_group = g.substitution_group ORDER BY at DESC LIMIT 1
) AS p
ORDER BY p.substitution_group;
