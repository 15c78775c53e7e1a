-- The exchange's writes and its load at start-up (exchange/store.py).

-- name: write_batch
-- A batch's frequent rows in one statement: one CTE per table, each fed by arrays that travel as the text of
-- an array literal. $1 is the batch's instant, the time of every row of it. Set-returning functions in the
-- select list run in step, row by row; `FROM unnest(a, b, ...)` would first copy every array into a tuple
-- store of its own (loadtest/README.md has what each choice here was worth).
WITH new_entries AS (
    INSERT INTO journal_entry (id, kind, order_id, fill_id, created_at)
    SELECT unnest($2::text::bigint[]) AS id, unnest($3::text::text[]) AS kind,
           unnest($4::text::bigint[]) AS order_id, unnest($5::text::bigint[]) AS fill_id,
           $1::timestamptz AS created_at
),
new_postings AS (
    INSERT INTO posting (entry_id, account_id, asset, bucket, amount)
    SELECT unnest($6::text::bigint[]) AS entry_id, unnest($7::text::bigint[]) AS account_id,
           unnest($8::text::text[]) AS asset, unnest($9::text::text[]) AS bucket,
           unnest($10::text::bigint[]) AS amount
),
new_orders AS (
    INSERT INTO book_order (id, instrument_id, account_id, client_order_id, side, type, tif, post_only, stp,
                            price, qty, budget, open_qty, filled_qty, filled_notional, maker_notional,
                            taker_notional, fee, maker_fee_ppm, taker_fee_ppm, held, status, reason, priority,
                            created_at, updated_at)
    SELECT unnest($11::text::bigint[]) AS id, unnest($12::text::integer[]) AS instrument_id,
           unnest($13::text::bigint[]) AS account_id, unnest($14::text::text[]) AS client_order_id,
           unnest($15::text::text[]) AS side, unnest($16::text::text[]) AS type, unnest($17::text::text[]) AS tif,
           unnest($18::text::boolean[]) AS post_only, unnest($19::text::text[]) AS stp,
           unnest($20::text::bigint[]) AS price, unnest($21::text::bigint[]) AS qty,
           unnest($22::text::bigint[]) AS budget, unnest($23::text::bigint[]) AS open_qty,
           unnest($24::text::bigint[]) AS filled_qty, unnest($25::text::bigint[]) AS filled_notional,
           unnest($26::text::bigint[]) AS maker_notional, unnest($27::text::bigint[]) AS taker_notional,
           unnest($28::text::bigint[]) AS fee, unnest($29::text::integer[]) AS maker_fee_ppm,
           unnest($30::text::integer[]) AS taker_fee_ppm, unnest($31::text::bigint[]) AS held,
           unnest($32::text::text[]) AS status, unnest($33::text::text[]) AS reason,
           unnest($34::text::bigint[]) AS priority, $1::timestamptz AS created_at, $1::timestamptz AS updated_at
),
changed_orders AS (
    UPDATE book_order AS t
    SET price = c.price, qty = c.qty, open_qty = c.open_qty, filled_qty = c.filled_qty,
        filled_notional = c.filled_notional, maker_notional = c.maker_notional, taker_notional = c.taker_notional,
        fee = c.fee, held = c.held, status = c.status, reason = c.reason, priority = c.priority,
        updated_at = c.updated_at
    FROM (
        SELECT unnest($35::text::bigint[]) AS id, unnest($36::text::bigint[]) AS price,
               unnest($37::text::bigint[]) AS qty, unnest($38::text::bigint[]) AS open_qty,
               unnest($39::text::bigint[]) AS filled_qty, unnest($40::text::bigint[]) AS filled_notional,
               unnest($41::text::bigint[]) AS maker_notional, unnest($42::text::bigint[]) AS taker_notional,
               unnest($43::text::bigint[]) AS fee, unnest($44::text::bigint[]) AS held,
               unnest($45::text::text[]) AS status, unnest($46::text::text[]) AS reason,
               unnest($47::text::bigint[]) AS priority, $1::timestamptz AS updated_at
    ) AS c
    WHERE t.id = c.id
),
new_fills AS (
    INSERT INTO fill (id, instrument_id, seq, price, qty, maker_order_id, taker_order_id, maker_account_id,
                      taker_account_id, taker_side, maker_fee, taker_fee, created_at)
    SELECT unnest($48::text::bigint[]) AS id, unnest($49::text::integer[]) AS instrument_id,
           unnest($50::text::bigint[]) AS seq, unnest($51::text::bigint[]) AS price,
           unnest($52::text::bigint[]) AS qty, unnest($53::text::bigint[]) AS maker_order_id,
           unnest($54::text::bigint[]) AS taker_order_id, unnest($55::text::bigint[]) AS maker_account_id,
           unnest($56::text::bigint[]) AS taker_account_id, unnest($57::text::text[]) AS taker_side,
           unnest($58::text::bigint[]) AS maker_fee, unnest($59::text::bigint[]) AS taker_fee,
           $1::timestamptz AS created_at
),
balances AS (
    INSERT INTO balance (account_id, asset, available, held, is_system)
    SELECT unnest($60::text::bigint[]) AS account_id, unnest($61::text::text[]) AS asset,
           unnest($62::text::bigint[]) AS available, unnest($63::text::bigint[]) AS held,
           unnest($64::text::boolean[]) AS is_system
    ON CONFLICT (account_id, asset)
    DO UPDATE SET available = EXCLUDED.available, held = EXCLUDED.held, is_system = EXCLUDED.is_system
),
sequence_numbers AS (
    INSERT INTO instrument_seq (instrument_id, seq)
    SELECT unnest($65::text::integer[]) AS instrument_id, unnest($66::text::bigint[]) AS seq
    ON CONFLICT (instrument_id) DO UPDATE SET seq = EXCLUDED.seq
),
signed_requests AS (
    -- bytea travels as hex text: its array literal then needs no backslash escapes.
    INSERT INTO signed_request (digest, created_at, result)
    SELECT decode(unnest($67::text::text[]), 'hex') AS digest, $1::timestamptz AS created_at,
           decode(unnest($68::text::text[]), 'hex') AS result
),
quotas AS (
    -- Delivery (exchange/delivery.py, exchange/quotas.py): quotas granted, reserved and settled, every call's
    -- reservation and usage, and the tokens each provider delivered.
    INSERT INTO quota (account_id, instrument_id, source, granted, reserved, used, lapsed, expires_at, updated_at)
    SELECT unnest($69::text::bigint[]) AS account_id, unnest($70::text::integer[]) AS instrument_id,
           unnest($71::text::text[]) AS source, unnest($72::text::bigint[]) AS granted,
           unnest($73::text::bigint[]) AS reserved, unnest($74::text::bigint[]) AS used,
           unnest($75::text::bigint[]) AS lapsed, unnest($76::text::timestamptz[]) AS expires_at,
           $1::timestamptz AS updated_at
    ON CONFLICT (account_id, instrument_id, source)
    DO UPDATE SET granted = EXCLUDED.granted, reserved = EXCLUDED.reserved, used = EXCLUDED.used,
                  lapsed = EXCLUDED.lapsed, expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at
),
reservations AS (
    INSERT INTO reservation (id, account_id, instrument_id, source, tokens, status, used, deadline_at, created_at,
                             closed_at)
    SELECT unnest($77::text::bigint[]) AS id, unnest($78::text::bigint[]) AS account_id,
           unnest($79::text::integer[]) AS instrument_id, unnest($80::text::text[]) AS source,
           unnest($81::text::bigint[]) AS tokens, unnest($82::text::text[]) AS status,
           unnest($83::text::bigint[]) AS used, unnest($84::text::timestamptz[]) AS deadline_at,
           unnest($85::text::timestamptz[]) AS created_at, unnest($86::text::timestamptz[]) AS closed_at
    ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, used = EXCLUDED.used, closed_at = EXCLUDED.closed_at
),
usages AS (
    INSERT INTO usage (id, reservation_id, account_id, provider_id, instrument_id, prompt_tokens,
                       completion_tokens, ttft_us, latency_us, status, created_at)
    SELECT unnest($87::text::bigint[]) AS id, unnest($88::text::bigint[]) AS reservation_id,
           unnest($89::text::bigint[]) AS account_id, unnest($90::text::bigint[]) AS provider_id,
           unnest($91::text::integer[]) AS instrument_id, unnest($92::text::bigint[]) AS prompt_tokens,
           unnest($93::text::bigint[]) AS completion_tokens, unnest($94::text::bigint[]) AS ttft_us,
           unnest($95::text::bigint[]) AS latency_us, unnest($96::text::text[]) AS status,
           $1::timestamptz AS created_at
),
deliveries AS (
    UPDATE provider AS t SET delivered = d.delivered, updated_at = $1::timestamptz
    FROM (SELECT unnest($97::text::bigint[]) AS id, unnest($98::text::bigint[]) AS delivered) AS d
    WHERE t.id = d.id
)
SELECT 1;

-- name: insert_account
INSERT INTO account (id, name, role, created_at) VALUES ($1, $2, $3, $4);

-- name: insert_instrument
-- The columns of Instrument.ROW_FIELDS, in that order.
INSERT INTO instrument (id, symbol, kind, status, tick, min_qty, max_qty, maker_fee_bps, taker_fee_bps, model,
                        substitution_group, quality, tokens_per_lot, issuer_id, description, license, grants,
                        supply_cap, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19);

-- name: update_instrument_status
UPDATE instrument SET status = $2 WHERE id = $1;

-- name: upsert_approval
INSERT INTO issuer_approval (account_id, instrument_id, capacity, issued, approved_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account_id, instrument_id)
DO UPDATE SET capacity = EXCLUDED.capacity, issued = EXCLUDED.issued, approved_at = EXCLUDED.approved_at;

-- name: insert_redemption
INSERT INTO redemption (id, instrument_id, account_id, qty, created_at) VALUES ($1, $2, $3, $4, $5);

-- name: insert_dataset_terms
-- The fields of datasets.Terms, in that order.
INSERT INTO dataset_terms (instrument_id, version, permitted_use, redistribution, attribution, days_per_token,
                           downloads_per_token, text, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: upsert_dataset_grant
-- The fields of datasets.Grant, in that order; only the downloads used change.
INSERT INTO dataset_grant (id, account_id, instrument_id, terms_version, expires_at, downloads, downloads_used,
                           created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO UPDATE SET downloads_used = EXCLUDED.downloads_used;

-- name: insert_dataset_download
INSERT INTO dataset_download (id, grant_id, file_id, bytes, created_at) VALUES ($1, $2, $3, $4, $5);

-- name: upsert_subscription_offer
-- The fields of subscriptions.Offer, in that order; only the status changes.
INSERT INTO subscription_offer (id, account_id, instrument_id, tokens_per_period, period, price, status, created_at,
                                updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at;

-- name: upsert_subscription
-- The fields of subscriptions.Subscription, in that order.
INSERT INTO subscription (id, account_id, offer_id, start_at, status, next_period, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id)
DO UPDATE SET status = EXCLUDED.status, next_period = EXCLUDED.next_period, updated_at = EXCLUDED.updated_at;

-- name: insert_subscription_period
INSERT INTO subscription_period (subscription_id, period, entry_id, price, fee, tokens, reason, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: insert_routed_order
-- The fields of RoutedOrder, in that order.
INSERT INTO routed_order (id, account_id, substitution_group, side, mode, qty, price, budget, rest_remainder,
                          status, filled_qty, filled_notional, fee, quality_lots, remainder, resting_order_id,
                          order_ids, package_id, created_at, client_order_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20);

-- name: upsert_package
-- The fields of Package, in that order.
INSERT INTO package (id, account_id, substitution_group, qty, mode, period, max_cost, price, start_at, status,
                     next_period, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id)
DO UPDATE SET status = EXCLUDED.status, next_period = EXCLUDED.next_period, updated_at = EXCLUDED.updated_at;

-- name: insert_package_execution
-- Unique by (package, period): a period committed twice fails its batch rather than run twice.
INSERT INTO package_execution (package_id, period, routed_order_id, reason, created_at) VALUES ($1, $2, $3, $4, $5);

-- name: insert_client_request
-- Unique by (account, kind, id): a client id recorded twice fails its batch rather than run twice.
INSERT INTO client_request (account_id, kind, client_request_id, result_id, created_at) VALUES ($1, $2, $3, $4, $5);

-- name: forget_signed_requests
DELETE FROM signed_request WHERE created_at < $1;

-- name: recent_signed_requests
-- The digests of the signed requests of the last $1 seconds, with their results: those may still be replayed, or
-- retried by a gateway that lost the answer.
SELECT digest, result FROM signed_request WHERE created_at > now() - make_interval(secs => $1);

-- name: next_ids
-- The next id of each numbered table.
SELECT (SELECT coalesce(max(id), 0) + 1 FROM account) AS account,
       (SELECT coalesce(max(id), 0) + 1 FROM instrument) AS instrument,
       (SELECT coalesce(max(id), 0) + 1 FROM book_order) AS book_order,
       (SELECT coalesce(max(id), 0) + 1 FROM routed_order) AS routed_order,
       (SELECT coalesce(max(id), 0) + 1 FROM fill) AS fill,
       (SELECT coalesce(max(id), 0) + 1 FROM journal_entry) AS journal_entry,
       (SELECT coalesce(max(id), 0) + 1 FROM redemption) AS redemption,
       (SELECT coalesce(max(id), 0) + 1 FROM package) AS package,
       (SELECT coalesce(max(id), 0) + 1 FROM dataset_download) AS dataset_download,
       (SELECT coalesce(max(id), 0) + 1 FROM subscription_offer) AS subscription_offer,
       (SELECT coalesce(max(id), 0) + 1 FROM subscription) AS subscription;

-- name: trader_accounts
SELECT id, name, role, created_at FROM account WHERE role <> 'system';

-- name: open_orders
-- The fields of Order, open orders in priority order.
SELECT id, instrument_id, account_id, client_order_id, side, type, tif, post_only, stp, price, qty, budget,
       open_qty, filled_qty, filled_notional, maker_notional, taker_notional, fee, maker_fee_ppm, taker_fee_ppm,
       held, status, reason, priority, created_at, updated_at
FROM book_order WHERE status = 'open' ORDER BY priority;

-- name: order_by_id
-- The fields of Order, for one order open or closed.
SELECT id, instrument_id, account_id, client_order_id, side, type, tif, post_only, stp, price, qty, budget,
       open_qty, filled_qty, filled_notional, maker_notional, taker_notional, fee, maker_fee_ppm, taker_fee_ppm,
       held, status, reason, priority, created_at, updated_at
FROM book_order WHERE id = $1;

-- name: instruments_with_seq
-- The fields of Instrument: its row and its book's sequence number.
SELECT i.id, i.symbol, i.kind, i.status, i.tick, i.min_qty, i.max_qty, i.maker_fee_bps, i.taker_fee_bps, i.model,
       i.substitution_group, i.quality, i.tokens_per_lot, i.issuer_id, i.description, i.license, i.grants,
       i.supply_cap, i.created_at, coalesce(s.seq, 0) AS seq
FROM instrument i LEFT JOIN instrument_seq s ON s.instrument_id = i.id;

-- name: issuer_approvals
SELECT account_id, instrument_id, capacity, issued, approved_at FROM issuer_approval;

-- name: all_balances
SELECT account_id, asset, available, held FROM balance;

-- name: order_client_ids
SELECT account_id, client_order_id, id FROM book_order WHERE client_order_id IS NOT NULL;

-- name: routed_order_client_ids
SELECT account_id, client_order_id, id FROM routed_order WHERE client_order_id IS NOT NULL;

-- name: client_requests
SELECT account_id, kind, client_request_id, result_id FROM client_request;

-- name: packages
-- The fields of Package.
SELECT id, account_id, substitution_group, qty, mode, period, max_cost, price, start_at, status, next_period,
       created_at, updated_at
FROM package;

-- name: current_dataset_terms
-- The fields of datasets.Terms: the newest version of each dataset's terms.
SELECT DISTINCT ON (instrument_id) instrument_id, version, permitted_use, redistribution, attribution,
       days_per_token, downloads_per_token, text, created_at
FROM dataset_terms
ORDER BY instrument_id, version DESC;

-- name: usable_dataset_grants
-- The fields of datasets.Grant: the grants a download may still start under at $1.
SELECT id, account_id, instrument_id, terms_version, expires_at, downloads, downloads_used, created_at
FROM dataset_grant
WHERE (expires_at IS NULL OR expires_at > $1) AND (downloads IS NULL OR downloads_used < downloads)
ORDER BY id;

-- name: subscription_offers
-- The fields of subscriptions.Offer.
SELECT id, account_id, instrument_id, tokens_per_period, period, price, status, created_at, updated_at
FROM subscription_offer;

-- name: running_subscriptions
-- The fields of subscriptions.Subscription, of those not ended.
SELECT id, account_id, offer_id, start_at, status, next_period, created_at, updated_at
FROM subscription WHERE status <> 'ended';

-- name: daily_volume
-- Traded notional per account and UTC day (microseconds since the epoch) since $2, as maker and as taker: the
-- trailing volume of the fee tiers. $1 is one account, or NULL for every account.
SELECT account_id, (extract(epoch FROM day) * 1000000)::bigint AS day, sum(notional)::bigint AS notional
FROM (
    SELECT maker_account_id AS account_id, date_trunc('day', created_at, 'UTC') AS day, price * qty AS notional
    FROM fill WHERE created_at >= $2 AND ($1::bigint IS NULL OR maker_account_id = $1)
    UNION ALL
    SELECT taker_account_id, date_trunc('day', created_at, 'UTC'), price * qty
    FROM fill WHERE created_at >= $2 AND ($1::bigint IS NULL OR taker_account_id = $1)
) AS traded
GROUP BY account_id, day;
