-- API keys for the HTTP API (see api/keys.py). The signing secret is not stored: it is derived from the
-- server's master key (kept outside the database), the key id and `salt`, so these rows alone cannot sign a
-- request. Keys are revoked (`revoked_at`), never deleted.
CREATE TABLE api_key (
    id          text PRIMARY KEY CHECK (id ~ '^tk_[0-9a-f]{16}$'),
    account_id  bigint NOT NULL REFERENCES account (id),
    scopes      text[] NOT NULL CHECK (cardinality(scopes) > 0
                                       AND scopes <@ ARRAY['read', 'trade', 'issue', 'admin']),
    salt        bytea NOT NULL CHECK (length(salt) = 32),
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX api_key_account ON api_key (account_id);
