-- The committed market view (api/marketdata.py) and the lookups of the book and ticker routes.

-- name: instrument_seqs
-- Listing an instrument writes its instrument_seq row in the same commit; the outer join still keeps an instrument
-- without one in view (at seq 0) rather than dropping it.
SELECT i.id, i.symbol, coalesce(s.seq, 0) FROM instrument i LEFT JOIN instrument_seq s ON s.instrument_id = i.id;

-- name: instrument_seq
SELECT coalesce(s.seq, 0) FROM instrument i LEFT JOIN instrument_seq s ON s.instrument_id = i.id WHERE i.symbol = $1;

-- name: open_levels
SELECT instrument_id, side, price, sum(open_qty)::bigint FROM book_order
WHERE status = 'open' AND price IS NOT NULL
GROUP BY instrument_id, side, price;

-- name: last_trades
SELECT i.id, f.price, f.qty FROM instrument i
CROSS JOIN LATERAL (SELECT price, qty FROM fill WHERE instrument_id = i.id ORDER BY id DESC LIMIT 1) AS f;

-- name: last_fill_id
SELECT coalesce(max(id), 0) FROM fill;

-- name: trade_minutes
SELECT instrument_id, (extract(epoch FROM date_trunc('minute', created_at)) / 60)::bigint AS minute,
       (array_agg(price ORDER BY id))[1], max(price), min(price), (array_agg(price ORDER BY id DESC))[1],
       sum(qty)::bigint, sum(price::numeric * qty)
FROM fill WHERE created_at > now() - interval '24 hours'
GROUP BY instrument_id, minute ORDER BY instrument_id, minute;
