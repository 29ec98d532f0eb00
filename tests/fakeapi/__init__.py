"""Fake Kubernetes API server for tests (standard library only); see ``server.py``.

This package owns the fake apiserver that the watcher's tests run the unmodified ``kubernetes``
client against.  Typical use::

    with FakeKube(bookmark_interval=0.2) as kube:
        kube.apply({"kind": "Service", "metadata": {"name": "web", "namespace": "prod"}})
        api = CoreV1Api(ApiClient(Configuration(host=kube.url)))
"""

from tests.fakeapi.server import (
    INITIAL_EVENTS_END_ANNOTATION,
    RESOURCES,
    FakeKube,
    Fault,
    InClusterFiles,
    RequestRecord,
    ResourceType,
    SelectorError,
    TLSFiles,
    make_tls_files,
    parse_bool,
    parse_field_selector,
    parse_label_selector,
)

__all__ = [
    "INITIAL_EVENTS_END_ANNOTATION",
    "RESOURCES",
    "FakeKube",
    "Fault",
    "InClusterFiles",
    "RequestRecord",
    "ResourceType",
    "SelectorError",
    "TLSFiles",
    "make_tls_files",
    "parse_bool",
    "parse_field_selector",
    "parse_label_selector",
]
