-- Subscriptions: sellers' offers and buyers' subscriptions (api/routes/subscriptions.py).

-- name: subscription_offer_by_id
SELECT o.id, o.account_id AS seller_id, i.symbol, o.tokens_per_period, o.period, o.price, o.status, o.created_at,
       o.updated_at
FROM subscription_offer o JOIN instrument i ON i.id = o.instrument_id
WHERE o.id = $1;

-- name: active_subscription_offers
-- Every active offer, or those of one instrument ($1), oldest first.
SELECT o.id, o.account_id AS seller_id, i.symbol, o.tokens_per_period, o.period, o.price, o.status, o.created_at,
       o.updated_at
FROM subscription_offer o JOIN instrument i ON i.id = o.instrument_id
WHERE o.status = 'active' AND ($1::text IS NULL OR i.symbol = $1)
ORDER BY o.id
LIMIT 500;

-- name: subscriptions_of_account
-- An account's subscriptions ($2: one of them, or all when null), newest first, with their offer and quota.
SELECT s.id, s.offer_id, i.symbol, o.tokens_per_period, o.period, o.price, s.status, s.start_at, s.next_period,
       s.created_at, s.updated_at, q.granted, q.reserved, q.used, q.lapsed, q.expires_at
FROM subscription s
JOIN subscription_offer o ON o.id = s.offer_id
JOIN instrument i ON i.id = o.instrument_id
LEFT JOIN quota q ON q.account_id = s.account_id AND q.instrument_id = o.instrument_id
                 AND q.source = 'subscription:' || s.id
WHERE s.account_id = $1 AND ($2::bigint IS NULL OR s.id = $2)
ORDER BY s.id DESC
LIMIT 500;

-- name: subscription_periods
-- A subscription's periods run, newest first, from before period $2 (or the newest).
SELECT period, entry_id, price, fee, tokens, reason, created_at
FROM subscription_period
WHERE subscription_id = $1 AND ($2::integer IS NULL OR period < $2)
ORDER BY period DESC
LIMIT $3;
