-- API keys and signed requests (api/keys.py).

-- name: insert_api_key
INSERT INTO api_key (id, account_id, scopes, salt, label, created_at) VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, account_id, scopes, label, created_at, revoked_at;

-- name: find_api_key
SELECT k.account_id, k.scopes, k.salt, a.role FROM api_key k JOIN account a ON a.id = k.account_id
WHERE k.id = $1 AND k.revoked_at IS NULL;

-- name: guard_signed_request
INSERT INTO signed_request (digest, created_at) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING RETURNING true;

-- name: api_keys_of_account
SELECT id, account_id, scopes, label, created_at, revoked_at FROM api_key WHERE account_id = $1 ORDER BY created_at, id;

-- name: revoke_api_key
UPDATE api_key SET revoked_at = coalesce(revoked_at, $3)
WHERE id = $1 AND ($2::bigint IS NULL OR account_id = $2)
RETURNING id, account_id, scopes, label, created_at, revoked_at;
