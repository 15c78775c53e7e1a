-- Issuance: approvals and redemptions (api/routes/tokens.py).

-- name: issuer_approval
SELECT a.account_id, i.symbol, a.capacity, a.issued, a.approved_at
FROM issuer_approval a JOIN instrument i ON i.id = a.instrument_id
WHERE a.account_id = $1 AND i.symbol = $2;

-- name: redemption_by_id
SELECT r.id, i.symbol, r.qty, r.created_at FROM redemption r JOIN instrument i ON i.id = r.instrument_id
WHERE r.id = $1;

-- name: redemptions_page
SELECT r.id, i.symbol, r.qty, r.created_at FROM redemption r JOIN instrument i ON i.id = r.instrument_id
WHERE r.account_id = $1 AND ($2::bigint IS NULL OR r.id < $2)
ORDER BY r.id DESC
LIMIT $3;
