-- A client's own id for a routed order, as for a book order: unique per account, so that a retried request
-- returns the routed order it made the first time instead of trading again.
ALTER TABLE routed_order ADD COLUMN client_order_id text;
CREATE UNIQUE INDEX routed_order_client_id ON routed_order (account_id, client_order_id)
    WHERE client_order_id IS NOT NULL;
