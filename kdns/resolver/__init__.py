"""The resolver core shared by nodecache and kdns forwarding: upstream client, cache, routing.

One module per job, each saying what it owns:

* ``message``: the cache's stored form: ``build`` and ``patch`` (a cache hit's bytes); it
  re-exports what the resolver uses of the wire package ``kdns.dns`` (``inspect``, the
  bailiwick ``sanitize``, error and TC replies; zone names are ``kdns.dns.names``).
* ``config``: the frozen dataclasses every knob arrives in (unit-suffixed fields).
* ``policy``: the small pure rules: what is cacheable, for how long, when to prefetch.
* ``cache``: the bounded cache (entries and bytes) with an injected clock.
* ``upstream``: the hardened UDP/TCP client with health tracking and failover.
* ``core``: ``Router`` and ``Resolver``: search-path seam, cache, upstream, serve-stale, prefetch.

Nothing here binds a listening socket or parses a client's bad input: the serving layer screens
queries (``kdns.dns.query.screen``) and hands over the parsed query.
"""
