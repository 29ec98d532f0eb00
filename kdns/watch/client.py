"""Choosing the cluster credentials and building the ``kubernetes`` API client from them.

This module owns source selection for the live watcher, in this order:

1. ``--kubeconfig PATH`` (with ``--context``) when given: an explicit flag is a deliberate
   choice, so it wins even inside a pod (as client-go's ``BuildConfigFromFlags`` does);
2. the in-cluster service account when ``KUBERNETES_SERVICE_HOST`` is set;
3. ``$KUBECONFIG`` (a ``:``-separated list, merged as kubectl does);
4. ``~/.kube/config`` under ``$HOME``.

None of these raises ``NoClusterConfig``, whose message tells the user how to point kdns at a
cluster or at a snapshot. A source that exists but cannot be loaded raises
``ClusterConfigError`` naming it. Both mean "exit 2" to the CLI.

The environment is passed in (never read from ``os.environ`` here) so tests can select every
path with a plain dict and no network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kubernetes.client import ApiClient, Configuration
from kubernetes.config import ConfigException, load_kube_config
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from kdns import __version__

__all__ = [
    "SERVICE_CERT_FILENAME",
    "SERVICE_TOKEN_FILENAME",
    "ClusterConfigError",
    "NoClusterConfig",
    "describe_source",
    "load_api_client",
]

NO_CLUSTER_HELP = (
    "no cluster configuration found: pass --kubeconfig PATH (and --context NAME), set "
    "KUBECONFIG, create ~/.kube/config, or run in a pod (KUBERNETES_SERVICE_HOST is set there); "
    "or serve a snapshot of Kubernetes objects with --manifests PATH"
)

# Sized so that one watch per resource and namespace keeps its connection in the pool: the
# client's default (cpu_count * 5) is 10 on a 2-core node, and an overflowing pool drops the
# connection after every watch and logs a warning each time.
_MIN_POOL_SIZE = 32


class ClusterConfigError(Exception):
    """A cluster configuration was selected but cannot be used (the message names it)."""


class NoClusterConfig(ClusterConfigError):  # noqa: N818 -- the name the CLI wiring uses
    """No cluster configuration exists at all; the message says how to provide one."""

    def __init__(self, message: str = NO_CLUSTER_HELP) -> None:
        super().__init__(message)


def describe_source(kubeconfig: str | None, environ: Mapping[str, str]) -> tuple[str, str | None]:
    """Which source ``load_api_client`` would use: ``(kind, path)`` without loading anything.

    ``kind`` is ``"kubeconfig-flag"``, ``"in-cluster"``, ``"KUBECONFIG"``, ``"home"`` or
    ``"none"``; ``path`` is the kubeconfig path (or ``KUBECONFIG`` value) where there is one.
    """
    if kubeconfig:
        return "kubeconfig-flag", kubeconfig
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "in-cluster", None
    env_value = environ.get("KUBECONFIG", "")
    if env_value.strip(os.pathsep):
        return "KUBECONFIG", env_value
    home = environ.get("HOME")
    if home:
        default = Path(home) / ".kube" / "config"
        if default.is_file():
            return "home", str(default)
    return "none", None


def load_api_client(
    kubeconfig: str | None,
    context: str | None,
    environ: Mapping[str, str],
    *,
    token_file: str = SERVICE_TOKEN_FILENAME,
    cert_file: str = SERVICE_CERT_FILENAME,
) -> ApiClient:
    """Build an ``ApiClient`` for the first available source (see the module docstring).

    ``token_file``/``cert_file`` are the service-account files of the in-cluster path (tests
    point them at a fake API server's files). The client is set up for a watcher that does its
    own retrying: urllib3 retries are off (``retries=0``), so a 429 and its ``Retry-After``, a
    refused connection or a TLS failure reach the watcher's backoff instead of being retried
    silently three times; TCP keepalive is on so a dead peer is noticed even between reads.
    """
    kind, path = describe_source(kubeconfig, environ)
    configuration = Configuration()
    if kind == "none":
        raise NoClusterConfig()
    if kind == "in-cluster":
        if context:
            raise ClusterConfigError(
                "--context needs a kubeconfig; the in-cluster configuration has no contexts"
            )
        try:
            # The config loaders of kubernetes 37 carry no annotations.
            loader = InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=token_file, cert_filename=cert_file, environ=environ
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
        except ConfigException as error:
            raise ClusterConfigError(
                f"in-cluster configuration (KUBERNETES_SERVICE_HOST is set): {error}"
            ) from None
    else:
        assert path is not None
        _load_kubeconfig(kind, path, context, configuration)
    configuration.retries = 0
    configuration.keep_alive = True
    configuration.connection_pool_maxsize = max(
        configuration.connection_pool_maxsize or 0, _MIN_POOL_SIZE
    )
    client = ApiClient(configuration)
    client.user_agent = f"kdns/{__version__}"
    return client


def _load_kubeconfig(
    kind: str, path: str, context: str | None, configuration: Configuration
) -> None:
    where = {"kubeconfig-flag": "--kubeconfig", "KUBECONFIG": "KUBECONFIG", "home": "kubeconfig"}[
        kind
    ]
    files = [p for p in path.split(os.pathsep) if p]
    existing = [p for p in files if Path(p).is_file()]
    if not existing:
        raise ClusterConfigError(f"{where} {path}: no such file")
    try:
        # persist_config=False: never write refreshed credentials back into the user's file.
        load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.pathsep.join(existing),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except ConfigException as error:
        raise ClusterConfigError(f"{where} {path}: {error}") from None
    except OSError as error:
        raise ClusterConfigError(f"{where} {path}: {error.strerror or error}") from None
    except Exception as error:  # YAML errors and malformed entries surface as many types
        raise ClusterConfigError(f"{where} {path}: cannot be loaded: {error}") from None
