-- Catalog size over time: for each UTC day with a successful run, the models present at the end
-- of that day, and how many were added, removed and restored during it.
SELECT day, models, added, removed, restored
FROM catalog_size_by_day
ORDER BY day
