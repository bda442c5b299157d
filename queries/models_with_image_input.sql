-- Models in today's catalog that take image input, and the endpoints they serve.
SELECT c.uuid, c.id AS model_id, c.name AS model_name, e.endpoint
FROM current_models c
JOIN model_modalities mm ON mm.model_uuid = c.uuid AND mm.direction = 'input' AND mm.modality = 'image'
LEFT JOIN model_endpoints e ON e.model_uuid = c.uuid
ORDER BY c.id, e.endpoint
