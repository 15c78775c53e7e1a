-- An account, its balances and ledger (api/routes/accounts.py).

-- name: account_by_id
SELECT id, name, role, created_at FROM account WHERE id = $1 AND role <> 'system';

-- name: account_balances
SELECT asset, available, held FROM balance WHERE account_id = $1 ORDER BY asset <> 'CNY', asset;

-- name: ledger_entries
WITH page AS (
    SELECT DISTINCT entry_id FROM posting
    WHERE account_id = $1 AND ($2::bigint IS NULL OR entry_id < $2) AND ($3::text IS NULL OR asset = $3)
    ORDER BY entry_id DESC
    LIMIT $4
)
SELECT e.id, e.kind, e.order_id, e.fill_id, e.created_at,
       array_agg(p.asset ORDER BY p.asset, p.bucket) AS assets,
       array_agg(p.bucket ORDER BY p.asset, p.bucket) AS buckets,
       array_agg(p.amount ORDER BY p.asset, p.bucket) AS amounts
FROM page
JOIN journal_entry e ON e.id = page.entry_id
JOIN posting p ON p.entry_id = page.entry_id AND p.account_id = $1
GROUP BY e.id
ORDER BY e.id DESC;

-- name: account_by_name
-- The id first: callers that want only the id take the first column.
SELECT id, role FROM account WHERE name = $1;

-- name: account_role
SELECT role FROM account WHERE id = $1;

-- name: count_admins
SELECT count(*) FROM account WHERE role = 'admin';
