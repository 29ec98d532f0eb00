"""Source selection of ``kdns.watch.client.load_api_client``: which credentials win, and errors.

Every case builds its environment as a plain dict and its files under ``tmp_path``; nothing
touches the network (building an ``ApiClient`` opens no connection).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kdns import __version__
from kdns.watch.client import (
    ClusterConfigError,
    NoClusterConfig,
    describe_source,
    load_api_client,
)


def write_kubeconfig(path: Path, server: str, *, contexts: dict[str, str] | None = None) -> Path:
    """A kubeconfig with one cluster per context (context name -> server URL)."""
    contexts = contexts or {"main": server}
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": s}} for n, s in contexts.items()],
        "users": [{"name": "u", "user": {"token": "tok"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in contexts],
        "current-context": next(iter(contexts)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def in_cluster_files(tmp_path: Path) -> tuple[Path, Path]:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    token, cert = directory / "token", directory / "ca.crt"
    token.write_text("sa-token")
    cert.write_text("not parsed until a TLS connection is made\n")
    return token, cert


IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def host_of(kubeconfig: str | None, environ: dict[str, str], **kwargs: Any) -> str:
    client = load_api_client(kubeconfig, kwargs.pop("context", None), environ, **kwargs)
    try:
        return str(client.configuration.host)
    finally:
        client.close()


def test_nothing_configured_raises_no_cluster_config_with_help(tmp_path: Path) -> None:
    for environ in ({}, {"HOME": str(tmp_path)}, {"KUBECONFIG": ""}):
        with pytest.raises(NoClusterConfig) as caught:
            load_api_client(None, None, environ)
        message = str(caught.value)
        for hint in ("--kubeconfig", "KUBECONFIG", "~/.kube/config", "--manifests", "pod"):
            assert hint in message
        assert describe_source(None, environ) == ("none", None)
    assert issubclass(NoClusterConfig, ClusterConfigError)


def test_home_kube_config_is_the_last_resort(tmp_path: Path) -> None:
    write_kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:6001")
    environ = {"HOME": str(tmp_path)}
    assert host_of(None, environ) == "http://127.0.0.1:6001"
    assert describe_source(None, environ) == ("home", str(tmp_path / ".kube" / "config"))


def test_kubeconfig_env_wins_over_home(tmp_path: Path) -> None:
    write_kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:6001")
    env_file = write_kubeconfig(tmp_path / "env.yaml", "http://127.0.0.1:6002")
    environ = {"HOME": str(tmp_path), "KUBECONFIG": str(env_file)}
    assert host_of(None, environ) == "http://127.0.0.1:6002"


def test_kubeconfig_env_is_a_path_list_and_missing_entries_are_skipped(tmp_path: Path) -> None:
    second = write_kubeconfig(tmp_path / "b.yaml", "http://127.0.0.1:6003")
    environ = {"KUBECONFIG": f"{tmp_path / 'missing.yaml'}:{second}"}
    assert host_of(None, environ) == "http://127.0.0.1:6003"


def test_kubeconfig_env_naming_no_file_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    write_kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:6001")
    environ = {"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "missing.yaml")}
    with pytest.raises(ClusterConfigError, match=r"KUBECONFIG .*missing\.yaml: no such file"):
        load_api_client(None, None, environ)


def test_in_cluster_when_kubernetes_service_host_is_set(tmp_path: Path) -> None:
    token, cert = in_cluster_files(tmp_path)
    write_kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:6001")
    environ = {**IN_CLUSTER, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / ".kube/config")}
    client = load_api_client(None, None, environ, token_file=str(token), cert_file=str(cert))
    try:
        configuration = client.configuration
        assert configuration.host == "https://10.96.0.1:443"
        assert configuration.ssl_ca_cert == str(cert)
        assert configuration.get_api_key_with_prefix("BearerToken", alias="authorization") == (
            "bearer sa-token"
        )
    finally:
        client.close()
    assert describe_source(None, environ) == ("in-cluster", None)


def test_in_cluster_ipv6_host_gets_brackets(tmp_path: Path) -> None:
    token, cert = in_cluster_files(tmp_path)
    environ = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    assert (
        host_of(None, environ, token_file=str(token), cert_file=str(cert))
        == "https://[fd00::1]:6443"
    )


def test_in_cluster_without_token_file_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match=r"in-cluster.*token file does not exist"):
        load_api_client(
            None,
            None,
            IN_CLUSTER,
            token_file=str(tmp_path / "nope"),
            cert_file=str(tmp_path / "nope.crt"),
        )


def test_in_cluster_rejects_context(tmp_path: Path) -> None:
    token, cert = in_cluster_files(tmp_path)
    with pytest.raises(ClusterConfigError, match="--context needs a kubeconfig"):
        load_api_client(None, "other", IN_CLUSTER, token_file=str(token), cert_file=str(cert))


def test_explicit_kubeconfig_flag_wins_over_everything(tmp_path: Path) -> None:
    token, cert = in_cluster_files(tmp_path)
    flag = write_kubeconfig(tmp_path / "flag.yaml", "http://127.0.0.1:6004")
    env_file = write_kubeconfig(tmp_path / "env.yaml", "http://127.0.0.1:6002")
    environ = {**IN_CLUSTER, "KUBECONFIG": str(env_file)}
    assert (
        host_of(str(flag), environ, token_file=str(token), cert_file=str(cert))
        == "http://127.0.0.1:6004"
    )
    assert describe_source(str(flag), environ) == ("kubeconfig-flag", str(flag))


def test_context_selects_a_cluster_and_an_unknown_one_is_an_error(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kc.yaml",
        "",
        contexts={"one": "http://127.0.0.1:7001", "two": "http://127.0.0.1:7002"},
    )
    assert host_of(str(path), {}) == "http://127.0.0.1:7001"
    assert host_of(str(path), {}, context="two") == "http://127.0.0.1:7002"
    with pytest.raises(ClusterConfigError, match=r"--kubeconfig .*kc\.yaml: .*three"):
        load_api_client(str(path), "three", {})


def test_missing_or_broken_kubeconfig_flag_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match=r"--kubeconfig .*absent: no such file"):
        load_api_client(str(tmp_path / "absent"), None, {})
    broken = tmp_path / "broken.yaml"
    broken.write_text("clusters: [unclosed\n")
    with pytest.raises(ClusterConfigError, match=r"--kubeconfig .*broken\.yaml"):
        load_api_client(str(broken), None, {})
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ClusterConfigError, match=r"--kubeconfig .*empty\.yaml"):
        load_api_client(str(empty), None, {})


def test_client_is_set_up_for_our_own_retries(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kc.yaml", "http://127.0.0.1:6001")
    client = load_api_client(str(path), None, {})
    try:
        configuration = client.configuration
        assert configuration.retries == 0  # 429s and refused connections reach our backoff
        assert configuration.keep_alive is True
        assert configuration.connection_pool_maxsize >= 32
        assert client.user_agent == f"kdns/{__version__}"
        assert configuration.get_api_key_with_prefix("BearerToken", alias="authorization") == (
            "Bearer tok"
        )
    finally:
        client.close()
