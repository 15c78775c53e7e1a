-- Token packages and their executions (api/routes/packages.py).

-- name: package_of_account
SELECT id, account_id, substitution_group, qty, mode, period, max_cost, price, start_at, status, next_period,
       created_at, updated_at
FROM package WHERE id = $1 AND account_id = $2;

-- name: packages_of_account
SELECT id, account_id, substitution_group, qty, mode, period, max_cost, price, start_at, status, next_period,
       created_at, updated_at
FROM package WHERE account_id = $1 ORDER BY id DESC;

-- name: package_executions
SELECT e.period, e.routed_order_id, e.reason, e.created_at, r.filled_qty, r.filled_notional, r.fee, r.quality_lots
FROM package_execution e LEFT JOIN routed_order r ON r.id = e.routed_order_id
WHERE e.package_id = $1 AND ($2::integer IS NULL OR e.period < $2)
ORDER BY e.period DESC
LIMIT $3;
