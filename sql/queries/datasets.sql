-- Datasets: terms, files, grants and downloads (exchange/dataset_files.py, api/routes/datasets.py).

-- name: dataset_file_count
SELECT count(*) FROM dataset_file WHERE instrument_id = $1;

-- name: insert_dataset_file
-- Its size is known once the body has been read (finish_dataset_file).
INSERT INTO dataset_file (instrument_id, name, size, sha256, created_at) VALUES ($1, $2, 0, $3, $4)
RETURNING id;

-- name: insert_dataset_chunk
INSERT INTO dataset_chunk (file_id, n, data) VALUES ($1, $2, $3);

-- name: finish_dataset_file
-- The fields of dataset_files.DatasetFile.
UPDATE dataset_file SET size = $2 WHERE id = $1
RETURNING id, instrument_id, name, size, sha256, created_at;

-- name: dataset_chunk
SELECT data FROM dataset_chunk WHERE file_id = $1 AND n = $2;

-- name: dataset_file_by_id
SELECT f.id, i.symbol, f.name, f.size, f.sha256, f.created_at
FROM dataset_file f JOIN instrument i ON i.id = f.instrument_id
WHERE f.id = $1;

-- name: dataset_files_of_instrument
SELECT f.id, i.symbol, f.name, f.size, f.sha256, f.created_at
FROM dataset_file f JOIN instrument i ON i.id = f.instrument_id
WHERE i.symbol = $1
ORDER BY f.id;

-- name: dataset_for_upload
-- The dataset a file is uploaded to, and who issues it.
SELECT id, kind, issuer_id FROM instrument WHERE symbol = $1;

-- name: dataset_terms_version
-- A dataset's terms, version $2 or (when null) the newest.
SELECT i.symbol, t.version, t.permitted_use, t.redistribution, t.attribution, t.days_per_token,
       t.downloads_per_token, t.text, t.created_at
FROM dataset_terms t JOIN instrument i ON i.id = t.instrument_id
WHERE i.symbol = $1 AND ($2::integer IS NULL OR t.version = $2)
ORDER BY t.version DESC
LIMIT 1;

-- name: dataset_grants_page
-- An account's grants, newest first, with the downloads counted under each.
SELECT g.id, i.symbol, g.terms_version, g.expires_at, g.downloads, g.downloads_used, g.created_at
FROM dataset_grant g JOIN instrument i ON i.id = g.instrument_id
WHERE g.account_id = $1 AND ($2::bigint IS NULL OR g.id < $2)
ORDER BY g.id DESC
LIMIT $3;

-- name: dataset_grant_by_id
SELECT g.id, i.symbol, g.terms_version, g.expires_at, g.downloads, g.downloads_used, g.created_at
FROM dataset_grant g JOIN instrument i ON i.id = g.instrument_id
WHERE g.id = $1 AND g.account_id = $2;

-- name: has_usable_dataset_grant
-- Whether account $1 may start a download of dataset $2 at $3 (the engine decides again when it starts).
SELECT EXISTS (
    SELECT FROM dataset_grant g JOIN instrument i ON i.id = g.instrument_id
    WHERE g.account_id = $1 AND i.symbol = $2 AND (g.expires_at IS NULL OR g.expires_at > $3)
      AND (g.downloads IS NULL OR g.downloads_used < g.downloads)
);

-- name: dataset_downloads_page
-- An account's downloads, newest first.
SELECT d.id, d.grant_id, i.symbol, d.file_id, f.name, d.bytes, d.created_at
FROM dataset_download d
JOIN dataset_grant g ON g.id = d.grant_id
JOIN dataset_file f ON f.id = d.file_id
JOIN instrument i ON i.id = f.instrument_id
WHERE g.account_id = $1 AND ($2::bigint IS NULL OR d.id < $2)
ORDER BY d.id DESC
LIMIT $3;
