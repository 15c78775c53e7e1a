-- The token price index (exchange/price_index.py): one row per substitution group and whole UTC minute `at`,
-- computed from the fills with at - 24 h <= created_at < at. The primary key is what lets a restarted or
-- second server compute the same minute again without adding a row.
CREATE TABLE price_index (
    substitution_group  text NOT NULL,
    at                  timestamptz NOT NULL CHECK (date_trunc('minute', at) = at),
    -- micro-yuan per 1M tokens; NULL when no trade fell in the window (stale: nothing is extrapolated)
    value               bigint CHECK (value >= 0),
    stale               boolean NOT NULL CHECK (stale = (value IS NULL)),
    trades              integer NOT NULL CHECK (trades >= 0),
    volume_tokens       numeric NOT NULL CHECK (volume_tokens >= 0),
    notional            numeric NOT NULL CHECK (notional >= 0),
    computed_at         timestamptz NOT NULL,
    PRIMARY KEY (substitution_group, at)
);
-- The indexer finds where it stopped with max(at).
CREATE INDEX price_index_at ON price_index (at);
-- The indexer reads the fills of a time range.
CREATE INDEX fill_created ON fill (created_at);
