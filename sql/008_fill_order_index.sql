-- An order's fills are found by the order's id. They used to be bounded by the order's creation and last update
-- times on the account's (account, created_at) index, and a wall clock stepping back between two batches hid a
-- fill stamped before its order was created. Each index serves one side of a fill.
CREATE INDEX fill_maker_order ON fill (maker_order_id);
CREATE INDEX fill_taker_order ON fill (taker_order_id);
