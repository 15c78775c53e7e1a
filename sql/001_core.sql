-- The exchange core: accounts, instruments, balances, the double-entry ledger, orders and fills.
-- Money is bigint micro-yuan, quantities bigint lots, prices micro-yuan per lot. Ids are assigned by the
-- sequencer (the single writer), so no table uses a database sequence. The high-volume tables (balance,
-- journal_entry, posting, book_order, fill) carry no foreign keys: each key check would lock the parent
-- row on every insert, and the single writer plus `tokex check` keep them consistent instead.

CREATE TABLE account (
    id          bigint PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('admin', 'issuer', 'trader', 'system')),
    created_at  timestamptz NOT NULL
);

CREATE TABLE instrument (
    id                 integer PRIMARY KEY,
    symbol             text NOT NULL UNIQUE,
    kind               text NOT NULL CHECK (kind IN ('compute', 'dataset')),
    status             text NOT NULL CHECK (status IN ('trading', 'halted')),
    tick               bigint NOT NULL CHECK (tick > 0),
    min_qty            bigint NOT NULL CHECK (min_qty > 0),
    max_qty            bigint NOT NULL CHECK (max_qty >= min_qty),
    maker_fee_bps      integer NOT NULL CHECK (maker_fee_bps BETWEEN 0 AND 10000),
    taker_fee_bps      integer NOT NULL CHECK (taker_fee_bps BETWEEN 0 AND 10000),
    -- compute token blocks
    model              text,
    substitution_group text,
    quality            integer CHECK (quality BETWEEN 0 AND 100),
    tokens_per_lot     bigint CHECK (tokens_per_lot > 0),
    -- dataset tokens
    issuer_id          bigint REFERENCES account (id),
    description        text,
    license            text,
    grants             text,
    supply_cap         bigint CHECK (supply_cap > 0),
    -- the last market-data sequence number used for this instrument
    seq                bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL,
    CHECK (kind <> 'compute' OR (model IS NOT NULL AND substitution_group IS NOT NULL
                                 AND quality IS NOT NULL AND tokens_per_lot IS NOT NULL)),
    CHECK (kind <> 'dataset' OR (issuer_id IS NOT NULL AND supply_cap IS NOT NULL))
);

-- Which issuers may mint which instrument; `issued` counts lots minted less lots burned.
CREATE TABLE issuer_approval (
    account_id     bigint NOT NULL REFERENCES account (id),
    instrument_id  integer NOT NULL REFERENCES instrument (id),
    capacity       bigint NOT NULL CHECK (capacity >= 0),
    issued         bigint NOT NULL DEFAULT 0 CHECK (issued >= 0),
    approved_at    timestamptz NOT NULL,
    PRIMARY KEY (account_id, instrument_id)
);

-- Per account and asset ('CNY' or an instrument symbol): what is free and what open orders hold.
-- System accounts (external cash, issuance, redemption, fees) are the other side of every flow in or
-- out of the exchange, so they alone may go negative.
CREATE TABLE balance (
    account_id  bigint NOT NULL,
    asset       text NOT NULL,
    available   bigint NOT NULL,
    held        bigint NOT NULL,
    is_system   boolean NOT NULL,
    PRIMARY KEY (account_id, asset),
    CHECK (is_system OR (available >= 0 AND held >= 0))
);

-- One entry per movement; its postings sum to zero per asset (checked by `tokex check`).
CREATE TABLE journal_entry (
    id             bigint PRIMARY KEY,
    kind           text NOT NULL,
    order_id       bigint,
    fill_id        bigint,
    created_at     timestamptz NOT NULL
);

CREATE TABLE posting (
    entry_id    bigint NOT NULL,
    account_id  bigint NOT NULL,
    asset       text NOT NULL,
    bucket      text NOT NULL CHECK (bucket IN ('available', 'held')),
    amount      bigint NOT NULL CHECK (amount <> 0)
);
CREATE INDEX posting_account ON posting (account_id, entry_id);

CREATE TABLE book_order (
    id               bigint PRIMARY KEY,
    instrument_id    integer NOT NULL,
    account_id       bigint NOT NULL,
    client_order_id  text,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    type             text NOT NULL CHECK (type IN ('limit', 'market')),
    tif              text NOT NULL CHECK (tif IN ('GTC', 'IOC', 'FOK')),
    post_only        boolean NOT NULL,
    stp              text NOT NULL,
    price            bigint,
    qty              bigint,
    budget           bigint,
    open_qty         bigint NOT NULL CHECK (open_qty >= 0),
    filled_qty       bigint NOT NULL CHECK (filled_qty >= 0),
    filled_notional  bigint NOT NULL CHECK (filled_notional >= 0),
    maker_notional   bigint NOT NULL,
    taker_notional   bigint NOT NULL,
    fee              bigint NOT NULL CHECK (fee >= 0),
    -- fee rates fixed when the order was accepted, in millionths of notional (tier applied)
    maker_fee_ppm    integer NOT NULL,
    taker_fee_ppm    integer NOT NULL,
    held             bigint NOT NULL CHECK (held >= 0),
    status           text NOT NULL CHECK (status IN ('open', 'filled', 'cancelled', 'expired')),
    reason           text,
    -- the sequence number at which the order last joined its price level: recovery's queue order
    priority         bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
-- A client order id names one order of its account, for ever: a repeat returns that order.
CREATE UNIQUE INDEX book_order_client_id ON book_order (account_id, client_order_id)
    WHERE client_order_id IS NOT NULL;
CREATE INDEX book_order_open ON book_order (instrument_id, priority) WHERE status = 'open';
CREATE INDEX book_order_account ON book_order (account_id, id);

CREATE TABLE fill (
    id                bigint PRIMARY KEY,
    instrument_id     integer NOT NULL,
    seq               bigint NOT NULL,
    price             bigint NOT NULL CHECK (price > 0),
    qty               bigint NOT NULL CHECK (qty > 0),
    maker_order_id    bigint NOT NULL,
    taker_order_id    bigint NOT NULL,
    maker_account_id  bigint NOT NULL,
    taker_account_id  bigint NOT NULL,
    taker_side        text NOT NULL,
    maker_fee         bigint NOT NULL,
    taker_fee         bigint NOT NULL,
    created_at        timestamptz NOT NULL
);
CREATE INDEX fill_instrument ON fill (instrument_id, id);
CREATE INDEX fill_maker ON fill (maker_account_id, created_at);
CREATE INDEX fill_taker ON fill (taker_account_id, created_at);

CREATE TABLE redemption (
    id             bigint PRIMARY KEY,
    instrument_id  integer NOT NULL REFERENCES instrument (id),
    account_id     bigint NOT NULL REFERENCES account (id),
    qty            bigint NOT NULL CHECK (qty > 0),
    created_at     timestamptz NOT NULL
);

-- The system accounts of exchange.ledger: the other side of every flow in or out of the exchange.
INSERT INTO account (id, name, role, created_at) VALUES
    (1, 'system:external', 'system', now()),
    (2, 'system:issuance', 'system', now()),
    (3, 'system:redemption', 'system', now()),
    (4, 'system:fees', 'system', now());
