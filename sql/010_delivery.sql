-- Delivery: providers and their obligations, buyers' quotas of tokens, and every inference call metered
-- (exchange/delivery.py, exchange/quotas.py). Ids come from the sequencer.

-- An issuer's OpenAI-compatible upstream for one compute instrument it is approved for. Its obligation is what
-- it minted (issuer_approval.issued lots x tokens_per_lot) less the tokens it delivered.
CREATE TABLE provider (
    id             bigint PRIMARY KEY,
    account_id     bigint NOT NULL,
    instrument_id  integer NOT NULL,
    base_url       text NOT NULL,
    model          text NOT NULL,
    -- AES-GCM nonce and ciphertext of the upstream's credential, under a key derived from the master key
    credential     bytea NOT NULL,
    delivered      bigint NOT NULL CHECK (delivered >= 0),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    UNIQUE (account_id, instrument_id),
    FOREIGN KEY (account_id, instrument_id) REFERENCES issuer_approval (account_id, instrument_id)
);

-- Tokens an account may consume on an instrument, per source ('redemption', 'package:<id>', ...). What is left
-- is granted - reserved - used - lapsed, never below zero.
CREATE TABLE quota (
    account_id     bigint NOT NULL REFERENCES account (id),
    instrument_id  integer NOT NULL REFERENCES instrument (id),
    source         text NOT NULL,
    granted        bigint NOT NULL CHECK (granted >= 0),
    reserved       bigint NOT NULL CHECK (reserved >= 0),
    used           bigint NOT NULL CHECK (used >= 0),
    lapsed         bigint NOT NULL CHECK (lapsed >= 0),
    expires_at     timestamptz,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (account_id, instrument_id, source),
    CHECK (granted - reserved - used - lapsed >= 0)
);

-- One call's worst case, held from one quota until the call settles, or until deadline_at passes (then it is
-- released whole: a gateway that crashed mid-call never charges the buyer).
CREATE TABLE reservation (
    id             bigint PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES account (id),
    instrument_id  integer NOT NULL REFERENCES instrument (id),
    source         text NOT NULL,
    tokens         bigint NOT NULL CHECK (tokens > 0),
    status         text NOT NULL CHECK (status IN ('open', 'settled', 'expired')),
    used           bigint NOT NULL CHECK (used >= 0 AND used <= tokens),
    deadline_at    timestamptz NOT NULL,
    created_at     timestamptz NOT NULL,
    closed_at      timestamptz
);
CREATE INDEX reservation_open ON reservation (id) WHERE status = 'open';

-- One attempt of a call on one provider: what it delivered (charged to the buyer, credited to the provider)
-- and how it went.
CREATE TABLE usage (
    id                 bigint PRIMARY KEY,
    reservation_id     bigint NOT NULL REFERENCES reservation (id),
    account_id         bigint NOT NULL REFERENCES account (id),
    provider_id        bigint NOT NULL REFERENCES provider (id),
    instrument_id      integer NOT NULL REFERENCES instrument (id),
    prompt_tokens      bigint NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens  bigint NOT NULL CHECK (completion_tokens >= 0),
    ttft_us            bigint NOT NULL CHECK (ttft_us >= 0),
    latency_us         bigint NOT NULL CHECK (latency_us >= 0),
    status             text NOT NULL CHECK (status IN ('ok', 'failed')),
    created_at         timestamptz NOT NULL
);
CREATE INDEX usage_provider ON usage (provider_id, id);
CREATE INDEX usage_account ON usage (account_id, id);

-- An inference key: its secret travels as a bearer token on every call (api/keys.py), so it holds the
-- `inference` scope alone, and no other key may hold it.
ALTER TABLE api_key DROP CONSTRAINT api_key_scopes_check;
ALTER TABLE api_key ADD CONSTRAINT api_key_scopes_check
    CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'trade', 'issue', 'admin', 'inference']
           AND (scopes = ARRAY['inference'] OR NOT 'inference' = ANY (scopes)));
