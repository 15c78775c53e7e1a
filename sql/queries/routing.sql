-- Routed orders and quotes (api/routes/routing.py).

-- name: routed_order_of_account
SELECT * FROM routed_order WHERE id = $1 AND account_id = $2;

-- name: routed_orders_page
SELECT * FROM routed_order WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3;

-- name: group_instruments
SELECT symbol, quality, tick, min_qty, max_qty, maker_fee_bps, taker_fee_bps, status FROM instrument
WHERE kind = 'compute' AND substitution_group = $1
ORDER BY symbol;

-- name: token_balances
SELECT asset, available FROM balance WHERE account_id = $1 AND asset = ANY($2::text[]);
