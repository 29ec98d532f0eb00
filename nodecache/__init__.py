"""nodecache: the per-node DNS cache for Kubernetes, built on kdns's resolver core.

It listens on the node-local addresses (169.254.20.10 and the kube-dns ClusterIP), answers from
``kdns.resolver`` (cache, prefetch, serve-stale), sends cluster and reverse names to the cluster
DNS over TCP and everything else to the node's nameservers. Importing it reads no environment
and binds nothing; ``nodecache.cli.main`` is the entry point.
"""

__version__ = "0.1.0"
