-- Token price indices (api/routes/indices.py, the feed's index channel).

-- name: group_listed
SELECT EXISTS (SELECT 1 FROM instrument WHERE kind = 'compute' AND substitution_group = $1);

-- name: index_history_desc
-- Both walk the (group, at) key one bin at a time, one index probe a step, and stop after $6 bins: the cost of a
-- page does not grow with the history. $4 and $5 bound ``at`` (null: unbounded).
WITH RECURSIVE lasts (at, n) AS (
    (SELECT at, 1 FROM price_index
     WHERE substitution_group = $1
       AND at >= coalesce($4::timestamptz, '-infinity') AND at < coalesce($5::timestamptz, 'infinity')
     ORDER BY at DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT p.at FROM price_index p
            WHERE p.substitution_group = $1 AND p.at >= coalesce($4::timestamptz, '-infinity')
              AND p.at < date_bin($2::interval, l.at, $3::timestamptz)
            ORDER BY p.at DESC LIMIT 1), l.n + 1
    FROM lasts l WHERE l.at IS NOT NULL AND l.n < $6
)
SELECT date_bin($2::interval, p.at, $3::timestamptz) AS bin, p.substitution_group, p.at, p.value, p.stale, p.trades,
       p.volume_tokens, p.notional, p.computed_at
FROM lasts l JOIN price_index p ON p.substitution_group = $1 AND p.at = l.at
ORDER BY p.at DESC;

-- name: index_history_asc
WITH RECURSIVE firsts (at, n) AS (
    (SELECT at, 1 FROM price_index
     WHERE substitution_group = $1
       AND at >= coalesce($4::timestamptz, '-infinity') AND at < coalesce($5::timestamptz, 'infinity')
     ORDER BY at LIMIT 1)
    UNION ALL
    SELECT (SELECT p.at FROM price_index p
            WHERE p.substitution_group = $1 AND p.at >= date_bin($2::interval, f.at, $3::timestamptz) + $2::interval
              AND p.at < coalesce($5::timestamptz, 'infinity')
            ORDER BY p.at LIMIT 1), f.n + 1
    FROM firsts f WHERE f.at IS NOT NULL AND f.n < $6
)
SELECT date_bin($2::interval, p.at, $3::timestamptz) AS bin, p.substitution_group, p.at, p.value, p.stale, p.trades,
       p.volume_tokens, p.notional, p.computed_at
FROM firsts f CROSS JOIN LATERAL (
    SELECT * FROM price_index p
    WHERE p.substitution_group = $1 AND p.at >= f.at
      AND p.at < least(date_bin($2::interval, f.at, $3::timestamptz) + $2::interval,
                       coalesce($5::timestamptz, 'infinity'))
    ORDER BY p.at DESC LIMIT 1
) AS p
ORDER BY p.at;
