-- Dataset tokens deliver data (exchange/datasets.py): structured, versioned license terms; the dataset's files,
-- stored here in chunks so that every server of a cluster can serve them; the access grants that redeeming
-- dataset tokens makes, and every download served under them.

-- A dataset's license terms, one row per version; the newest applies to new redemptions. What one redeemed token
-- grants: days of access, downloads, or both (both: the downloads must be used within the days).
CREATE TABLE dataset_terms (
    instrument_id        integer NOT NULL REFERENCES instrument (id),
    version              integer NOT NULL CHECK (version > 0),
    permitted_use        text[] NOT NULL,
    redistribution       boolean NOT NULL,
    -- the credit line a user must show; null when none is required
    attribution          text,
    days_per_token       integer CHECK (days_per_token > 0),
    downloads_per_token  integer CHECK (downloads_per_token > 0),
    text                 text NOT NULL,
    created_at           timestamptz NOT NULL,
    PRIMARY KEY (instrument_id, version),
    CHECK (days_per_token IS NOT NULL OR downloads_per_token IS NOT NULL)
);

-- A file of a dataset, uploaded by its issuer; immutable once stored. Written by the upload itself, outside the
-- sequencer: files are not ledger state, and a file's bytes should not pass through the writer.
CREATE TABLE dataset_file (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instrument_id  integer NOT NULL REFERENCES instrument (id),
    name           text NOT NULL,
    size           bigint NOT NULL CHECK (size >= 0),
    sha256         bytea NOT NULL CHECK (length(sha256) = 32),
    created_at     timestamptz NOT NULL,
    UNIQUE (instrument_id, name)
);

-- A file's bytes in order, chunk n from byte n x chunk size (exchange/datasets.py: CHUNK_BYTES).
CREATE TABLE dataset_chunk (
    file_id  bigint NOT NULL REFERENCES dataset_file (id),
    n        integer NOT NULL CHECK (n >= 0),
    data     bytea NOT NULL,
    PRIMARY KEY (file_id, n)
);
-- Dataset files are mostly compressed already: store the chunks as they are, without trying again.
ALTER TABLE dataset_chunk ALTER COLUMN data SET STORAGE EXTERNAL;

-- The access one dataset redemption grants, under the terms version the holder accepted by redeeming: until
-- expires_at (null: no time limit) and for `downloads` downloads (null: any number).
CREATE TABLE dataset_grant (
    id              bigint PRIMARY KEY REFERENCES redemption (id),
    account_id      bigint NOT NULL REFERENCES account (id),
    instrument_id   integer NOT NULL,
    terms_version   integer NOT NULL,
    expires_at      timestamptz,
    downloads       bigint CHECK (downloads > 0),
    downloads_used  bigint NOT NULL CHECK (downloads_used >= 0),
    created_at      timestamptz NOT NULL,
    FOREIGN KEY (instrument_id, terms_version) REFERENCES dataset_terms (instrument_id, version),
    CHECK (downloads_used <= downloads OR downloads IS NULL)
);
CREATE INDEX dataset_grant_account ON dataset_grant (account_id, id);

-- Every download served, counted when it starts: the metering of dataset access.
CREATE TABLE dataset_download (
    id          bigint PRIMARY KEY,
    grant_id    bigint NOT NULL REFERENCES dataset_grant (id),
    file_id     bigint NOT NULL REFERENCES dataset_file (id),
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    created_at  timestamptz NOT NULL
);
CREATE INDEX dataset_download_grant ON dataset_download (grant_id);
