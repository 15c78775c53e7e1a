-- A gateway that lost the answer to a command (its engine died after the commit, or answered too late) sends it
-- again as a retry; the engine then answers with the original result instead of running it twice. So each signed
-- request keeps its result, encoded (exchange.commands.encode_result), committed in the same batch as its effects.
-- Rows written before this column existed have none: a retry of one is refused as a replay.
ALTER TABLE signed_request ADD COLUMN result bytea;
