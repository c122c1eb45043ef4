-- Errors by kind of event and message, most frequent first.
SELECT kind, error, COUNT(*) AS occurrences, MIN(t_ms) AS first_ms, MAX(t_ms) AS last_ms
FROM events
WHERE error IS NOT NULL AND kind <> 'stage'
GROUP BY kind, error
ORDER BY occurrences DESC, kind, error
LIMIT 20
