-- The exchange's invariants, checked against what is committed (exchange/invariants.py).

-- name: negative_balances
SELECT account_id, asset, available, held FROM balance
WHERE NOT is_system AND (available < 0 OR held < 0);

-- name: held_mismatches
WITH order_holds AS (
    SELECT o.account_id, CASE WHEN o.side = 'buy' THEN 'CNY' ELSE i.symbol END AS asset, sum(o.held) AS held
    FROM book_order o JOIN instrument i ON i.id = o.instrument_id
    WHERE o.status = 'open'
    GROUP BY 1, 2
)
SELECT coalesce(b.account_id, h.account_id) AS account_id, coalesce(b.asset, h.asset) AS asset,
       coalesce(b.held, 0) AS balance_held, coalesce(h.held, 0) AS orders_held
FROM balance b FULL JOIN order_holds h ON h.account_id = b.account_id AND h.asset = b.asset
WHERE coalesce(b.held, 0) <> coalesce(h.held, 0);

-- name: unbalanced_entries
SELECT entry_id, asset, sum(amount) FROM posting GROUP BY entry_id, asset HAVING sum(amount) <> 0 LIMIT 20;

-- name: unbalanced_assets
SELECT asset, sum(available + held) FROM balance GROUP BY asset HAVING sum(available + held) <> 0;

-- name: unreconciled_balances
WITH posted AS (
    SELECT account_id, asset,
           sum(amount) FILTER (WHERE bucket = 'available') AS available,
           sum(amount) FILTER (WHERE bucket = 'held') AS held
    FROM posting GROUP BY account_id, asset
)
SELECT coalesce(b.account_id, p.account_id), coalesce(b.asset, p.asset),
       b.available, b.held, coalesce(p.available, 0), coalesce(p.held, 0)
FROM balance b FULL JOIN posted p ON p.account_id = b.account_id AND p.asset = b.asset
WHERE coalesce(b.available, 0) <> coalesce(p.available, 0) OR coalesce(b.held, 0) <> coalesce(p.held, 0)
LIMIT 20;

-- name: routed_order_mismatches
-- The swept children closed within the routed order's command, so their totals never move afterwards; the
-- resting child is an ordinary order from then on.
SELECT r.id, r.filled_qty, coalesce(sum(o.filled_qty), 0) AS children_qty
FROM routed_order r
LEFT JOIN book_order o ON o.id = ANY(r.order_ids) AND o.id IS DISTINCT FROM r.resting_order_id
GROUP BY r.id
HAVING r.filled_qty <> coalesce(sum(o.filled_qty), 0) OR r.filled_notional <> coalesce(sum(o.filled_notional), 0)
    OR r.fee <> coalesce(sum(o.fee), 0)
    OR count(o.id) + (r.resting_order_id IS NOT NULL)::int <> cardinality(r.order_ids)
LIMIT 20;

-- name: open_orders_by_instrument
-- The swept children closed within the routed order's command, so their totals never move afterwards; the
-- resting child is an ordinary order from then on.
-- UTED_TOTALS = """
-- LECT r.id, r.filled_qty, coalesce(sum(o.filled_qty), 0) AS children_qty
-- OM routed_order r
-- FT JOIN book_order o ON o.id = ANY(r.order_ids) AND o.id IS DISTINCT FROM r.resting_order_id
-- OUP BY r.id
-- VING r.filled_qty <> coalesce(sum(o.filled_qty), 0) OR r.filled_notional <> coalesce(sum(o.filled_notional), 0)
--   OR r.fee <> coalesce(sum(o.fee), 0)
--   OR count(o.id) + (r.resting_order_id IS NOT NULL)::int <> cardinality(r.order_ids)
-- MIT 20
-- "
-- 
SELECT o.instrument_id, o.id, o.account_id, o.side, o.price, o.open_qty, o.post_only, o.stp
FROM book_order o WHERE o.status = 'open' ORDER BY o.instrument_id, o.priority;

-- name: instrument_ticks
SELECT id, tick FROM instrument;

-- name: dataset_grant_mismatches
-- A grant is what its redemption bought under the terms it accepted: the same account, dataset and instant,
-- qty x days_per_token days and qty x downloads_per_token downloads; a grant with a download limit has counted
-- every download made under it.
WITH counted AS (SELECT grant_id, count(*) AS downloads FROM dataset_download GROUP BY grant_id)
SELECT g.id
FROM dataset_grant g
LEFT JOIN redemption r ON r.id = g.id
LEFT JOIN dataset_terms t ON t.instrument_id = g.instrument_id AND t.version = g.terms_version
LEFT JOIN counted c ON c.grant_id = g.id
WHERE r.id IS NULL OR t.version IS NULL
   OR r.account_id <> g.account_id OR r.instrument_id <> g.instrument_id OR r.created_at <> g.created_at
   OR g.expires_at IS DISTINCT FROM r.created_at + make_interval(hours => (r.qty * t.days_per_token * 24)::integer)
   OR g.downloads IS DISTINCT FROM r.qty * t.downloads_per_token
   OR g.downloads_used <> CASE WHEN g.downloads IS NULL THEN 0 ELSE coalesce(c.downloads, 0) END
LIMIT 20;

-- name: dataset_redemptions_without_grant
-- Once a dataset has terms, every redemption of it accepts them and makes a grant.
SELECT r.id
FROM redemption r
LEFT JOIN dataset_grant g ON g.id = r.id
WHERE g.id IS NULL
  AND EXISTS (SELECT FROM dataset_terms t WHERE t.instrument_id = r.instrument_id AND t.created_at <= r.created_at)
LIMIT 20;

-- name: dataset_downloads_outside_grants
-- A download is of a file of its grant's dataset, of the whole file, while the grant lasted.
SELECT d.id
FROM dataset_download d
JOIN dataset_grant g ON g.id = d.grant_id
JOIN dataset_file f ON f.id = d.file_id
WHERE f.instrument_id <> g.instrument_id OR d.bytes <> f.size
   OR d.created_at < g.created_at OR d.created_at >= g.expires_at
LIMIT 20;

-- name: quota_mismatches
-- Each quota against what it must add up to: no part below zero; reserved = its open reservations; used = the
-- tokens its settled reservations charged; a redemption quota granted = the account's redeemed lots x tokens per
-- lot of the instrument.
WITH open_held AS (
    SELECT account_id, instrument_id, source, sum(tokens) AS tokens
    FROM reservation WHERE status = 'open' GROUP BY 1, 2, 3
), charged AS (
    SELECT account_id, instrument_id, source, sum(used) AS tokens
    FROM reservation WHERE status <> 'open' GROUP BY 1, 2, 3
), redeemed AS (
    SELECT r.account_id, r.instrument_id, 'redemption' AS source, sum(r.qty) * i.tokens_per_lot AS tokens
    FROM redemption r JOIN instrument i ON i.id = r.instrument_id
    WHERE i.kind = 'compute'
    GROUP BY r.account_id, r.instrument_id, i.tokens_per_lot
)
SELECT q.account_id, q.instrument_id, q.source,
       q.granted, q.reserved, q.used, q.lapsed,
       coalesce(h.tokens, 0) AS open_reserved, coalesce(c.tokens, 0) AS charged, d.tokens AS redeemed
FROM quota q
LEFT JOIN open_held h USING (account_id, instrument_id, source)
LEFT JOIN charged c USING (account_id, instrument_id, source)
LEFT JOIN redeemed d USING (account_id, instrument_id, source)
WHERE q.granted - q.reserved - q.used - q.lapsed < 0
   OR q.reserved <> coalesce(h.tokens, 0)
   OR q.used <> coalesce(c.tokens, 0)
   OR (q.source = 'redemption' AND q.granted <> coalesce(d.tokens, 0))
UNION ALL
-- compute redeemed with no quota to show for it
SELECT d.account_id, d.instrument_id, d.source, 0, 0, 0, 0, 0, 0, d.tokens
FROM redeemed d
WHERE NOT EXISTS (SELECT 1 FROM quota q WHERE (q.account_id, q.instrument_id, q.source)
                                            = (d.account_id, d.instrument_id, d.source))
LIMIT 20;

-- name: obligation_mismatches
-- Each provider's delivered tokens against its usage rows, and each settled reservation's charge against the
-- usage rows of its call: obligation = minted x tokens per lot - delivered holds only if both add up.
SELECT 'provider' AS what, p.id, p.delivered AS recorded,
       coalesce(sum(u.prompt_tokens + u.completion_tokens), 0) AS counted
FROM provider p LEFT JOIN usage u ON u.provider_id = p.id
GROUP BY p.id
HAVING p.delivered <> coalesce(sum(u.prompt_tokens + u.completion_tokens), 0)
UNION ALL
SELECT 'reservation', r.id, r.used, coalesce(sum(u.prompt_tokens + u.completion_tokens), 0)
FROM reservation r LEFT JOIN usage u ON u.reservation_id = r.id
GROUP BY r.id
HAVING r.used <> coalesce(sum(u.prompt_tokens + u.completion_tokens), 0)
LIMIT 20;

-- name: subscription_mismatches
-- Each subscription has a row for every period before next_period, and its quota was granted exactly the tokens
-- of its paid periods; each paid period's journal entry took the price from the buyer and gave the seller the
-- price less the fee, and the exchange the fee.
WITH periods AS (
    SELECT subscription_id, count(*) AS runs, coalesce(sum(tokens), 0) AS tokens
    FROM subscription_period GROUP BY subscription_id
), payments AS (
    SELECT sp.subscription_id, sp.period, sp.price, sp.fee, s.account_id AS buyer, o.account_id AS seller,
           coalesce(sum(p.amount) FILTER (WHERE p.account_id = s.account_id), 0) AS buyer_moved,
           coalesce(sum(p.amount) FILTER (WHERE p.account_id = o.account_id), 0) AS seller_moved,
           coalesce(sum(p.amount) FILTER (WHERE p.account_id = 4), 0) AS fee_moved
    FROM subscription_period sp
    JOIN subscription s ON s.id = sp.subscription_id
    JOIN subscription_offer o ON o.id = s.offer_id
    LEFT JOIN posting p ON p.entry_id = sp.entry_id AND p.asset = 'CNY'
    WHERE sp.entry_id IS NOT NULL
    GROUP BY sp.subscription_id, sp.period, sp.price, sp.fee, s.account_id, o.account_id
)
SELECT s.id, NULL::integer AS period
FROM subscription s
JOIN subscription_offer o ON o.id = s.offer_id
LEFT JOIN periods r ON r.subscription_id = s.id
LEFT JOIN quota q ON q.account_id = s.account_id AND q.instrument_id = o.instrument_id
                 AND q.source = 'subscription:' || s.id
WHERE coalesce(r.runs, 0) <> s.next_period OR coalesce(q.granted, 0) <> coalesce(r.tokens, 0)
UNION ALL
SELECT subscription_id, period
FROM payments
WHERE buyer_moved <> -price OR seller_moved <> price - fee OR fee_moved <> fee
LIMIT 20;
