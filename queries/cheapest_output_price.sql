-- Cheapest models by output price per million tokens, in today's catalog.
SELECT c.uuid, c.id AS model_id, c.name AS model_name, p.price AS output_price_per_million
FROM current_models c
JOIN model_pricing p ON p.model_uuid = c.uuid AND p.price_key = 'output_price_per_million'
ORDER BY p.price, c.id
