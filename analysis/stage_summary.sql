-- One row per stage, in run order: measured events, failures, and latency at a glance.
SELECT phase, stage, driver,
       MIN(t_ms) AS first_ms,
       COUNT(*) AS events,
       SUM(CASE WHEN ok = false THEN 1 ELSE 0 END) AS failed,
       ROUND(AVG(latency_ms), 3) AS mean_latency_ms,
       ROUND(MAX(latency_ms), 3) AS max_latency_ms
FROM events
WHERE kind <> 'stage'
GROUP BY phase, stage, driver
ORDER BY first_ms, phase, stage
