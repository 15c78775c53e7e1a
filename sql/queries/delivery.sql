-- Delivery: providers, quotas, reservations and usage, written and loaded by the engine's store
-- (exchange/store.py), and read by the API (api/routes/providers.py, api/routes/quotas.py).

-- name: upsert_provider
-- The fields of exchange.delivery.Provider, in that order.
INSERT INTO provider (id, account_id, instrument_id, base_url, model, credential, delivered, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id)
DO UPDATE SET base_url = EXCLUDED.base_url, model = EXCLUDED.model, credential = EXCLUDED.credential,
              delivered = EXCLUDED.delivered, updated_at = EXCLUDED.updated_at;

-- name: delivery_next_ids
SELECT (SELECT coalesce(max(id), 0) + 1 FROM provider) AS provider,
       (SELECT coalesce(max(id), 0) + 1 FROM reservation) AS reservation,
       (SELECT coalesce(max(id), 0) + 1 FROM usage) AS usage;

-- name: providers
-- The fields of exchange.delivery.Provider.
SELECT id, account_id, instrument_id, base_url, model, credential, delivered, created_at, updated_at
FROM provider ORDER BY id;

-- name: quotas
-- The fields of exchange.quotas.Quota.
SELECT account_id, instrument_id, source, granted, reserved, used, lapsed, expires_at, updated_at FROM quota;

-- name: open_reservations
-- The fields of exchange.quotas.Reservation.
SELECT id, account_id, instrument_id, source, tokens, status, used, deadline_at, created_at, closed_at
FROM reservation WHERE status = 'open';

-- name: provider_windows
-- The last $1 attempts of every provider, oldest first: the windows of the measured figures.
SELECT p.id AS provider_id, w.ok, w.ttft_us, w.completion_tokens, w.latency_us
FROM provider p
CROSS JOIN LATERAL (
    SELECT u.id, u.status = 'ok' AS ok, u.ttft_us, u.completion_tokens, u.latency_us
    FROM usage u WHERE u.provider_id = p.id
    ORDER BY u.id DESC LIMIT $1
) AS w
ORDER BY p.id, w.id;

-- name: account_quotas
-- An account's quotas with what is left, by instrument and source (GET /v1/quotas).
SELECT i.symbol, q.source, q.granted, q.reserved, q.used, q.lapsed,
       q.granted - q.reserved - q.used - q.lapsed AS remaining, q.expires_at, q.updated_at
FROM quota q JOIN instrument i ON i.id = q.instrument_id
WHERE q.account_id = $1
ORDER BY i.symbol, q.source;

-- name: account_providers
-- An issuer's providers, with what each owes (GET /v1/providers).
SELECT p.id, p.account_id, i.symbol, p.base_url, p.model, p.delivered,
       a.issued * i.tokens_per_lot - p.delivered AS obligation, p.created_at, p.updated_at
FROM provider p
JOIN instrument i ON i.id = p.instrument_id
JOIN issuer_approval a ON a.account_id = p.account_id AND a.instrument_id = p.instrument_id
WHERE p.account_id = $1
ORDER BY p.id;

-- name: provider_deliveries
-- A provider's attempts, newest first, before the cursor $2 (GET /v1/providers/{id}/deliveries).
SELECT u.id, u.reservation_id, i.symbol, u.prompt_tokens, u.completion_tokens, u.ttft_us, u.latency_us,
       u.status, u.created_at
FROM usage u JOIN instrument i ON i.id = u.instrument_id
WHERE u.provider_id = $1 AND ($2::bigint IS NULL OR u.id < $2)
ORDER BY u.id DESC
LIMIT $3;

-- name: provider_redemptions
-- The redemptions of the instrument provider $1 serves, newest first, before the cursor $2: the lots it may be
-- asked to deliver (GET /v1/providers/{id}/redemptions). Buyers are not named.
SELECT r.id, i.symbol, r.qty, r.created_at
FROM redemption r JOIN instrument i ON i.id = r.instrument_id
WHERE r.instrument_id = (SELECT instrument_id FROM provider WHERE id = $1) AND ($2::bigint IS NULL OR r.id < $2)
ORDER BY r.id DESC
LIMIT $3;

-- name: provider_stats
-- Every provider with its instrument and listed quality, for the measured figures (GET /v1/providers/stats).
SELECT p.id, a.name AS provider, i.symbol, i.quality, p.delivered
FROM provider p JOIN instrument i ON i.id = p.instrument_id JOIN account a ON a.id = p.account_id
ORDER BY i.symbol, p.id;

-- name: compute_models
-- What the inference gateway lists as models: every compute instrument (GET /inference/v1/models).
SELECT symbol, substitution_group FROM instrument WHERE kind = 'compute' ORDER BY symbol;
