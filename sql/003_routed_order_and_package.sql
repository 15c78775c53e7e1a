-- Routed orders (one order over the books of a substitution group, executed as child orders) and token
-- packages (standing plans that place a routed order every period). Ids come from the sequencer: a routed
-- order's id is drawn from the same numbering as book_order ids, so the ledger's order_id names either.

CREATE TABLE routed_order (
    id                bigint PRIMARY KEY,
    account_id        bigint NOT NULL REFERENCES account (id),
    substitution_group text NOT NULL,
    side              text NOT NULL CHECK (side IN ('buy', 'sell')),
    mode              text NOT NULL CHECK (mode IN ('cost', 'quality', 'balance')),
    qty               bigint NOT NULL CHECK (qty > 0),
    price             bigint CHECK (price > 0),
    budget            bigint CHECK (budget > 0),
    rest_remainder    boolean NOT NULL,
    status            text NOT NULL CHECK (status IN ('filled', 'partially_filled', 'unfilled')),
    filled_qty        bigint NOT NULL CHECK (filled_qty >= 0),
    filled_notional   bigint NOT NULL CHECK (filled_notional >= 0),
    fee               bigint NOT NULL CHECK (fee >= 0),
    -- sum of quality x lots filled: average quality = quality_lots / filled_qty
    quality_lots      bigint NOT NULL CHECK (quality_lots >= 0),
    remainder         bigint NOT NULL CHECK (remainder >= 0),
    resting_order_id  bigint,
    -- the child orders (book_order ids), in the order they executed; the resting one last
    order_ids         bigint[] NOT NULL,
    package_id        bigint,
    created_at        timestamptz NOT NULL,
    CHECK (price IS NOT NULL OR budget IS NOT NULL)
);
CREATE INDEX routed_order_account ON routed_order (account_id, id);

CREATE TABLE package (
    id                 bigint PRIMARY KEY,
    account_id         bigint NOT NULL REFERENCES account (id),
    substitution_group text NOT NULL,
    qty                bigint NOT NULL CHECK (qty > 0),
    mode               text NOT NULL CHECK (mode IN ('cost', 'quality', 'balance')),
    period             text NOT NULL CHECK (period IN ('day', 'week', 'month')),
    -- the most one period's routed order may cost, fees included
    max_cost           bigint NOT NULL CHECK (max_cost > 0),
    price              bigint CHECK (price > 0),
    start_at           timestamptz NOT NULL,
    status             text NOT NULL CHECK (status IN ('active', 'paused', 'cancelled')),
    -- the number of the next period to run; period n starts n days, weeks or calendar months after start_at
    next_period        integer NOT NULL CHECK (next_period >= 0),
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX package_account ON package (account_id, id);

-- One row per period run, committed in the same batch as its routed order: the key makes a second run of a
-- period impossible, whatever crashes in between.
CREATE TABLE package_execution (
    package_id       bigint NOT NULL REFERENCES package (id),
    period           integer NOT NULL CHECK (period >= 0),
    routed_order_id  bigint REFERENCES routed_order (id),
    -- why no routed order was placed (e.g. insufficient_funds); null when one was
    reason           text,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (package_id, period),
    CHECK ((routed_order_id IS NULL) <> (reason IS NULL))
);
