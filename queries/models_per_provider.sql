-- Models per provider in today's catalog.
SELECT COALESCE(provider, 'unknown') AS provider, COUNT(*) AS models
FROM current_models
GROUP BY COALESCE(provider, 'unknown')
ORDER BY models DESC, provider
