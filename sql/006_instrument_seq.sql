-- An instrument's market-data sequence number moves with every batch that touches its book, while the rest of
-- its row (reference data under a dozen CHECK constraints, which PostgreSQL prepares again for every statement
-- that writes the table) changes only when an admin lists or halts it. The counter gets a narrow table of its own.
CREATE TABLE instrument_seq (
    instrument_id  integer PRIMARY KEY REFERENCES instrument (id),
    -- the last market-data sequence number used for this instrument
    seq            bigint NOT NULL
);
INSERT INTO instrument_seq (instrument_id, seq) SELECT id, seq FROM instrument;
ALTER TABLE instrument DROP COLUMN seq;
