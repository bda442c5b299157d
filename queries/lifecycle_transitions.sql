-- Lifecycle transitions: when a model's lifecycle_status changed (e.g. active -> deprecated),
-- from what to what. An empty from_status means the field was absent before.
SELECT r.observed_at, f.model_uuid, m.id AS model_id, m.name AS model_name,
       f.old_value AS from_status, f.new_value AS to_status
FROM model_change_fields f
JOIN models m ON m.uuid = f.model_uuid
JOIN sync_runs r ON r.id = f.run_id
WHERE f.path = 'lifecycle_status'
ORDER BY r.observed_at, m.id
