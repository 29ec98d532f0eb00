"""The live source: list+watch of the Kubernetes API, feeding the same store as a snapshot.

``client`` picks and loads the cluster credentials (in-cluster, ``--kubeconfig``, ``$KUBECONFIG``,
``~/.kube/config``) into a ``kubernetes.client.ApiClient``; ``informer`` runs one list+watch
loop per (resource, namespace) on its own thread; ``source`` owns the set of informers a
configuration needs, the sync flag and the staleness figures.

Only the low-level ``ApiClient`` request path of the ``kubernetes`` package is used, never the
generated ``CoreV1Api``/``DiscoveryV1Api`` classes or its model deserialization: the raw JSON
goes straight into ``kdns.source.convert`` (see ``informer`` for why).
"""

from kdns.watch.client import ClusterConfigError, NoClusterConfig, load_api_client
from kdns.watch.informer import Informer, Resource, WatchSettings
from kdns.watch.source import WatchSource

__all__ = [
    "ClusterConfigError",
    "Informer",
    "NoClusterConfig",
    "Resource",
    "WatchSettings",
    "WatchSource",
    "load_api_client",
]
