"""Node plumbing for nodecache, kept apart from the DNS code.

On a node, nodecache owns a dummy interface (default ``nodelocaldns``) holding its listen IPs
and iptables NOTRACK/ACCEPT rules that make traffic to those IPs skip kube-proxy's DNAT and reach
our sockets (../shared/docs/nodecache.md §1.1-1.2). This package:

* ``rules``: the rules as pure data, a function of (IPs, ports);
* ``commands``: the edge that runs ``iptables -w``/``ip`` (injectable, so tests need no root);
* ``plumbing``: idempotent reconcile of the interface and rules from ``iptables-save`` output;
* ``settings``: the flags (NodeLocal's names) shared by ``serve`` and ``guard``;
* ``sync``: the cache's own loop: rules only after the listener answers, re-ensured periodically;
* ``guard``: ``nodecache guard``, which removes the plumbing when the cache stops answering;
* ``liveness``: the guard's heartbeat and its ``/health`` and ``/metrics`` endpoint;
* ``handover``: the zero-loss upgrade: step aside from the SO_REUSEPORT group and drain.
"""
