-- Price changes: every change of any price of any model, with the old and new price
-- (NULL where the price was absent, i.e. zero).
SELECT r.observed_at, f.model_uuid, m.id AS model_id, m.name AS model_name,
       SUBSTR(f.path, 9) AS price_key,
       CAST(f.old_value AS DECIMAL(20, 8)) AS old_price,
       CAST(f.new_value AS DECIMAL(20, 8)) AS new_price
FROM model_change_fields f
JOIN models m ON m.uuid = f.model_uuid
JOIN sync_runs r ON r.id = f.run_id
WHERE f.path LIKE 'pricing.%'
ORDER BY r.observed_at, m.id, price_key
