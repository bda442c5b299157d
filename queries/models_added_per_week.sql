-- Models added per week (weeks start on Monday, UTC).
SELECT observed_week AS week, COUNT(*) AS models_added
FROM catalog_changes
WHERE kind = 'added'
GROUP BY observed_week
ORDER BY observed_week
