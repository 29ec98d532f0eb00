"""nodecache's admin tools: ``explain`` (``offline``: a pod's lookup through an in-process
nodecache over a cluster snapshot) and ``tune`` (``tune/``: a query log replayed through the
real cache at several sizes and TTL policies)."""
