-- Instruments as the API lists them (api/routes/instruments.py, api/routes/fees.py).

-- name: instrument_fee_rates
SELECT maker_fee_bps, taker_fee_bps FROM instrument WHERE symbol = $1;

-- name: all_instruments
SELECT symbol, kind, status, tick, min_qty, max_qty, maker_fee_bps, taker_fee_bps, model, substitution_group,
       quality, tokens_per_lot, issuer_id, description, license, grants, supply_cap, created_at
FROM instrument ORDER BY symbol;

-- name: instrument_by_symbol
SELECT symbol, kind, status, tick, min_qty, max_qty, maker_fee_bps, taker_fee_bps, model, substitution_group,
       quality, tokens_per_lot, issuer_id, description, license, grants, supply_cap, created_at
FROM instrument WHERE symbol = $1;
