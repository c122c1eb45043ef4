-- The ten agents with the highest mean latency, across the run.
SELECT agent,
       COUNT(*) AS calls,
       ROUND(AVG(latency_ms), 3) AS mean_latency_ms,
       ROUND(MAX(latency_ms), 3) AS max_latency_ms,
       SUM(CASE WHEN ok = false THEN 1 ELSE 0 END) AS failed
FROM events
WHERE agent IS NOT NULL AND latency_ms IS NOT NULL
GROUP BY agent
ORDER BY mean_latency_ms DESC, agent
LIMIT 10
