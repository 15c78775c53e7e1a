-- The one writer of a database (exchange/sequencer.py).

-- name: writer_settings
-- Run as one script on the writer connection: planner settings that make the batch statement's one plan right
-- at any size. Planning the batch statement anew for every batch took a large share of the server's time
-- (loadtest/README.md), so it is planned once. Its only right plan reaches each row by its key; but a plan made
-- once cannot see how long the arrays are, and sees tables that start empty, for which it would choose hash
-- joins over whole-table scans and keep them as the tables grow. With index paths alone left, the plan stays
-- right.
SET plan_cache_mode = force_generic_plan;
SET enable_seqscan = off;
SET enable_hashjoin = off;
SET enable_mergejoin = off;

-- name: default_planner
-- Run as one script inside a transaction that reads whole tables (the load): the writer's settings undone.
SET LOCAL plan_cache_mode TO DEFAULT;
SET LOCAL enable_seqscan TO DEFAULT;
SET LOCAL enable_hashjoin TO DEFAULT;
SET LOCAL enable_mergejoin TO DEFAULT;

-- name: try_writer_lock
SELECT pg_try_advisory_lock($1);

-- name: release_writer_lock
SELECT pg_advisory_unlock($1);

-- name: ping
SELECT 1;
