"""``nodecache tune``: a query log (``logs``) replayed through the real cache (``replay``) at
several cache sizes and TTL policies, reported as a table, JSON and a recommendation
(``report``), plotted (``plot``), with a progress bar on long replays (``progress``)."""
