"""``explain --pod NS/NAME`` through the API: the Pod read with the live watcher's credentials
(``--kubeconfig``/``--context``, in-cluster, ``$KUBECONFIG``, ``~/.kube/config``: the order of
``kdns.watch.client``) and converted as every other object (``kdns.source.convert``).

Loaded only when such a lookup runs (``kdns.admin.command`` imports it lazily), so the CLIs
and nodecache do not load the kubernetes client otherwise.
"""

from __future__ import annotations

import os

from kdns.model import Pod
from kdns.source.convert import ConvertError, convert
from kdns.watch.client import ClusterConfigError, load_api_client
from kdns.watch.read import ReadError, read_pod


class PodFetchError(RuntimeError):
    """The Pod cannot be had from the API (the message says why)."""


def fetch_pod(namespace: str, name: str, kubeconfig: str | None, context: str | None) -> Pod:
    try:
        client = load_api_client(kubeconfig, context, os.environ)
    except ClusterConfigError as error:
        raise PodFetchError(str(error)) from None
    try:
        document = read_pod(client, namespace, name)
        pod = convert(document)
    except ReadError as error:
        raise PodFetchError(f"Pod {namespace}/{name}: {error}") from None
    except ConvertError as error:
        raise PodFetchError(f"Pod {namespace}/{name}: {error}") from None
    finally:
        client.close()  # type: ignore[no-untyped-call]
    if not isinstance(pod, Pod):
        raise PodFetchError(f"Pod {namespace}/{name}: the API server returned another kind")
    return pod
