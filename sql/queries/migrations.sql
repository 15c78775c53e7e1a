-- The bookkeeping of the migrations (exchange/database/migrations.py).

-- name: wait_for_migration_lock
SELECT pg_advisory_lock($1);

-- name: release_migration_lock
SELECT pg_advisory_unlock($1);

-- name: create_schema_migration
CREATE TABLE IF NOT EXISTS schema_migration (
    version    int PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT version FROM schema_migration;

-- name: record_migration
INSERT INTO schema_migration (version, name) VALUES ($1, $2);
