-- Agreements and how many of today's models use each (agreements no model uses show 0).
SELECT a.uuid, a.name, COUNT(c.uuid) AS models
FROM agreements a
LEFT JOIN current_models c ON c.agreement_uuid = a.uuid
GROUP BY a.uuid, a.name
ORDER BY models DESC, a.name
