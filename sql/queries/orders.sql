-- Orders and fills of one account (api/routes/orders.py, api/routes/reads.py).

-- name: order_fills
-- By the orders' ids (sql/008_fill_order_index.sql), never by times: a wall clock that steps back would hide fills.
SELECT maker_order_id AS order_id, id, price, qty, maker_fee AS fee, 'maker' AS role FROM fill
WHERE maker_order_id = ANY($2::bigint[]) AND maker_account_id = $1
UNION ALL
SELECT taker_order_id, id, price, qty, taker_fee, 'taker' FROM fill
WHERE taker_order_id = ANY($2::bigint[]) AND taker_account_id = $1
ORDER BY id;

-- name: entry_movement
SELECT asset, amount FROM posting WHERE account_id = $1 AND entry_id = $2;

-- name: order_of_account
SELECT o.*, i.symbol
FROM book_order o JOIN instrument i ON i.id = o.instrument_id
WHERE o.id = $1 AND o.account_id = $2;

-- name: orders_by_ids
SELECT o.*, i.symbol
FROM book_order o JOIN instrument i ON i.id = o.instrument_id
WHERE o.id = ANY($1::bigint[]) AND o.account_id = $2;

-- name: order_by_client_id
SELECT o.*, i.symbol
FROM book_order o JOIN instrument i ON i.id = o.instrument_id
WHERE o.account_id = $1 AND o.client_order_id = $2;

-- name: orders_page
SELECT o.*, i.symbol
FROM book_order o JOIN instrument i ON i.id = o.instrument_id
WHERE o.account_id = $1 AND ($2::bigint IS NULL OR o.id < $2)
  AND ($3::text IS NULL OR (o.status = 'open') = ($3 = 'open'))
  AND ($4::text IS NULL OR i.symbol = $4)
  AND ($5::text IS NULL OR o.side = $5)
ORDER BY o.id DESC
LIMIT $6;

-- name: fills_page
SELECT mine.*, i.symbol FROM (
    (SELECT f.id, f.maker_order_id AS order_id, f.instrument_id,
            CASE WHEN f.taker_side = 'buy' THEN 'sell' ELSE 'buy' END AS side, 'maker' AS role,
            f.price, f.qty, f.maker_fee AS fee, f.seq, f.created_at
     FROM fill f
     WHERE f.maker_account_id = $1
       AND ($2::timestamptz IS NULL OR f.created_at < $2 OR (f.created_at = $2 AND f.id < $3))
       AND ($4::text IS NULL OR f.instrument_id = (SELECT id FROM instrument WHERE symbol = $4))
     ORDER BY f.created_at DESC, f.id DESC
     LIMIT $5)
    UNION ALL
    (SELECT f.id, f.taker_order_id, f.instrument_id, f.taker_side, 'taker',
            f.price, f.qty, f.taker_fee, f.seq, f.created_at
     FROM fill f
     WHERE f.taker_account_id = $1
       AND ($2::timestamptz IS NULL OR f.created_at < $2 OR (f.created_at = $2 AND f.id < $3))
       AND ($4::text IS NULL OR f.instrument_id = (SELECT id FROM instrument WHERE symbol = $4))
     ORDER BY f.created_at DESC, f.id DESC
     LIMIT $5)
) AS mine JOIN instrument i ON i.id = mine.instrument_id
ORDER BY mine.created_at DESC, mine.id DESC
LIMIT $5;
