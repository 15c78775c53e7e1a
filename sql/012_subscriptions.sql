-- Subscriptions (exchange/subscriptions.py): a seller's offer of tokens every period at a fixed price, and the
-- buyers subscribed to it. Each period paid grants a quota (source 'subscription:<id>') that ends with the period.

CREATE TABLE subscription_offer (
    id                 bigint PRIMARY KEY,
    account_id         bigint NOT NULL REFERENCES account (id),
    instrument_id      integer NOT NULL REFERENCES instrument (id),
    tokens_per_period  bigint NOT NULL CHECK (tokens_per_period > 0),
    period             text NOT NULL CHECK (period IN ('day', 'week', 'month')),
    -- micro-yuan a period, paid by the buyer; the exchange's fee comes out of the seller's share
    price              bigint NOT NULL CHECK (price > 0),
    status             text NOT NULL CHECK (status IN ('active', 'withdrawn')),
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

CREATE TABLE subscription (
    id           bigint PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES account (id),
    offer_id     bigint NOT NULL REFERENCES subscription_offer (id),
    -- period n starts n days or weeks, or n calendar months, after start_at
    start_at     timestamptz NOT NULL,
    status       text NOT NULL CHECK (status IN ('active', 'cancelling', 'ended')),
    -- the number of the next period to run; every period before it has its row in subscription_period
    next_period  integer NOT NULL CHECK (next_period >= 0),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX subscription_account ON subscription (account_id, id);

-- One row per period run, committed with its payment and grant: the key makes a second run of a period impossible.
CREATE TABLE subscription_period (
    subscription_id  bigint NOT NULL REFERENCES subscription (id),
    period           integer NOT NULL CHECK (period >= 0),
    -- the payment's journal entry; null when the period was not paid, for `reason`
    entry_id         bigint,
    price            bigint NOT NULL CHECK (price >= 0),
    fee              bigint NOT NULL CHECK (fee >= 0 AND fee <= price),
    tokens           bigint NOT NULL CHECK (tokens >= 0),
    reason           text CHECK (reason IN ('insufficient_funds', 'missed', 'cancelled', 'offer_withdrawn')),
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (subscription_id, period),
    CHECK ((entry_id IS NULL) <> (reason IS NULL))
);

-- A subscription is made once per client request id, like the other requests that name themselves.
ALTER TABLE client_request DROP CONSTRAINT client_request_kind_check;
ALTER TABLE client_request ADD CONSTRAINT client_request_kind_check
    CHECK (kind IN ('deposit', 'withdrawal', 'mint', 'burn', 'redemption', 'package', 'subscription'));
