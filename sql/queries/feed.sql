-- The feed's user channel: an account's orders, fills and balances, and its keys (api/feed/).

-- name: user_open_orders
SELECT o.*, i.symbol
FROM book_order o JOIN instrument i ON i.id = o.instrument_id
WHERE o.account_id = $1 AND i.symbol = $2 AND o.status = 'open'
ORDER BY o.id;

-- name: user_fills
SELECT f.id, f.maker_order_id, f.taker_order_id, f.maker_account_id, f.taker_account_id, f.taker_side, f.price,
       f.qty, f.maker_fee, f.taker_fee, f.seq, f.created_at
FROM fill f JOIN instrument i ON i.id = f.instrument_id
WHERE f.id BETWEEN $1 AND $2 AND i.symbol = $3
  AND (f.maker_account_id = ANY($4::bigint[]) OR f.taker_account_id = ANY($4::bigint[]))
ORDER BY f.id;

-- name: user_balances
SELECT account_id, asset, available, held FROM balance
WHERE account_id = ANY($1::bigint[]) AND asset = ANY($2::text[]);

-- name: last_entry_id
-- Where the commits stood when a user snapshot was read: journal entry ids grow in commit order.
SELECT coalesce(max(id), 0) FROM journal_entry;

-- name: live_api_keys
SELECT id FROM api_key WHERE id = ANY($1::text[]) AND revoked_at IS NULL;
