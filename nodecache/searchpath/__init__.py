"""ndots absorption: nodecache answers the search-path queries a pod's resolv.conf multiplies.

Data flow: ``shape`` (where a name sits in the cluster zone, by kdns's own grammar) and
``facts`` (NXDOMAINs, namespace cuts and zone SOAs learned from real replies) decide local
NXDOMAINs; ``autopath`` (the pure walk rules) and ``clients`` (who uses the ClusterFirst search
path) decide node-scoped autopath; ``policy.SearchPath`` puts them in front of the resolver's
cache and upstreams; ``pods`` is the edge that watches this node's Pods through kdns's watcher.
"""
