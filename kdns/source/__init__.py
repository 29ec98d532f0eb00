"""Sources of cluster state: turning Kubernetes objects into the slim model.

``convert`` owns the edge between raw object dicts and ``kdns.model`` records; ``manifests``
owns loading (and watching) a snapshot of such objects from files on disk.
"""
