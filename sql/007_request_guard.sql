-- A signed request runs at most once. Each state-changing request the exchange accepted leaves a digest of its
-- signature here, committed with its effects: the same signed bytes sent again find it and are refused. A row is
-- needed only while its request's timestamp is inside the signing window, so old rows are deleted.
CREATE TABLE signed_request (
    -- the first 16 bytes of SHA-256 of the request's signature (hex, as sent)
    digest      bytea PRIMARY KEY,
    created_at  timestamptz NOT NULL
);
CREATE INDEX signed_request_created_at ON signed_request (created_at);

-- A client's own id for a deposit, withdrawal, mint, burn, redemption or package, unique per account and kind:
-- sending it again returns what it did the first time (the journal entry, redemption or package) and changes
-- nothing. Orders and routed orders keep theirs in their own rows (client_order_id).
CREATE TABLE client_request (
    account_id         bigint NOT NULL REFERENCES account (id),
    kind               text NOT NULL CHECK (kind IN ('deposit', 'withdrawal', 'mint', 'burn', 'redemption',
                                                      'package')),
    client_request_id  text NOT NULL,
    -- the journal entry of a deposit, withdrawal, mint or burn; the redemption's or the package's id
    result_id          bigint NOT NULL,
    created_at         timestamptz NOT NULL,
    PRIMARY KEY (account_id, kind, client_request_id)
);
