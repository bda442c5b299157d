-- Version releases per model: how many distinct versions each model has had since it was first
-- synced, and when its newest version first appeared.
SELECT m.uuid, m.id AS model_id, m.name AS model_name,
       COUNT(*) AS versions_seen, MAX(v.first_seen_at) AS last_release_seen_at
FROM model_versions v
JOIN models m ON m.uuid = v.model_uuid
GROUP BY m.uuid, m.id, m.name
ORDER BY versions_seen DESC, m.id
