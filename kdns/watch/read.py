"""Reading one object from the API server, for the admin tools (``explain --pod NS/NAME``):
the kubernetes client stays in ``kdns.watch``, and what comes back is the object as a dict,
for ``kdns.source.convert`` like every other object."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError


class ReadError(RuntimeError):
    """The object could not be read (the message says why: not found, forbidden, no server)."""


def read_pod(client: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """``GET /api/v1/namespaces/NS/pods/NAME`` as a dict (with ``kind`` and ``apiVersion``)."""
    try:
        response = CoreV1Api(client).read_namespaced_pod(
            name, namespace, _preload_content=False, _request_timeout=10
        )
        # _preload_content=False returns the raw urllib3 response, not a V1Pod.
        document = json.loads(response.data)  # type: ignore[attr-defined]
    except ApiException as error:
        raise ReadError(f"the API server answered {error.status} {error.reason}") from None
    except (HTTPError, OSError, ValueError) as error:
        raise ReadError(f"cannot read it from the API server: {error}") from None
    if not isinstance(document, dict):
        raise ReadError("the API server's reply is not an object")
    document.setdefault("kind", "Pod")
    document.setdefault("apiVersion", "v1")
    return document
