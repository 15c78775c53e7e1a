-- Public market history: trades and candles from the fills (api/routes/history.py).

-- name: instrument_id_by_symbol
SELECT id FROM instrument WHERE symbol = $1;

-- name: trades_desc
SELECT id, price, qty, taker_side, seq, created_at FROM fill
WHERE instrument_id = $1 AND ($2::bigint IS NULL OR id < $2)
  AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at < $4)
ORDER BY id DESC
LIMIT $5;

-- name: trades_asc
SELECT id, price, qty, taker_side, seq, created_at FROM fill
WHERE instrument_id = $1 AND ($2::bigint IS NULL OR id > $2)
  AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at < $4)
ORDER BY id
LIMIT $5;

-- name: candles
SELECT date_bin($2::interval, created_at, $5::timestamptz) AS start,
       (array_agg(price ORDER BY id))[1] AS open, max(price) AS high, min(price) AS low,
       (array_agg(price ORDER BY id DESC))[1] AS close, sum(qty)::bigint AS volume,
       sum(price::numeric * qty) AS notional
FROM fill
WHERE instrument_id = $1 AND created_at >= $3 AND created_at < $4
GROUP BY 1
ORDER BY 1;
