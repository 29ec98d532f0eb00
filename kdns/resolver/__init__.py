"""The resolver core shared by nodecache and kdns forwarding: upstream client, cache, routing.

One module per job, each saying what it owns:

* ``zone``: zone names on the wire and longest-suffix tables (routes, TTL policy).
* ``message``: pure functions over reply bytes: ``inspect``, the bailiwick ``sanitize``,
  ``build`` (our stored form) and ``patch`` (a cache hit's bytes), error replies.
* ``config``: the frozen dataclasses every knob arrives in (unit-suffixed fields).
* ``policy``: the small pure rules: what is cacheable, for how long, when to prefetch.
* ``cache``: the bounded cache (entries and bytes) with an injected clock.
* ``upstream``: the hardened UDP/TCP client with health tracking and failover.
* ``core``: ``Router`` and ``Resolver``: search-path seam, cache, upstream, serve-stale, prefetch.

Nothing here binds a listening socket or parses a client's bad input: the serving layer screens
queries (``kdns.serve.protocol.screen``) and hands over the parsed query.
"""
