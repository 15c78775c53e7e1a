-- The embedded server's first start (exchange/database/embedded.py): run by PostgreSQL's single-user mode from
-- standard input, before any connection can be made. The name is embedded.DATABASE: an identifier, which no
-- parameter can carry.

-- name: create_embedded_database
CREATE DATABASE tokex;
