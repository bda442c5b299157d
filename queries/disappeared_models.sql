-- Models that disappeared from the catalog and have not come back, newest removal first.
SELECT uuid, id AS model_id, name AS model_name, provider, lifecycle_status, removed_at
FROM models
WHERE removed_at IS NOT NULL
ORDER BY removed_at DESC, id
