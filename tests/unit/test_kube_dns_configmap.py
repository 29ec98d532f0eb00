"""The kube-dns ConfigMap as data: parsing with kube-dns's validation, the overlay under the
config file, the follower that keeps the last good one, the directory source and the settings
(pure; no sockets, no threads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kdns.config import ConfigError
from kdns.kubedns import KubeDnsFollower, KubeDnsSettings, settings_of
from kdns.kubedns_sources import DirectorySource
from kdns.resolver.kubedns import KubeDns, KubeDnsError, overlay, parse


@dataclass(frozen=True)
class ParseCase:
    id: str
    data: dict[str, str] | None
    expected: KubeDns | None = None
    error: str = ""
    """The field a rejection names (``KubeDnsError.field``)."""


def stubs(value: object) -> dict[str, str]:
    return {"stubDomains": json.dumps(value)}


def upstreams(value: object) -> dict[str, str]:
    return {"upstreamNameservers": json.dumps(value)}


PARSE = [
    ParseCase("absent", None, KubeDns()),
    ParseCase("empty-data", {}, KubeDns()),
    ParseCase("blank-values", {"stubDomains": "", "upstreamNameservers": " "}, KubeDns()),
    ParseCase("stub", stubs({"Corp.Example.": ["10.0.0.53", "10.0.0.54:5353"]}),
              KubeDns((("corp.example", ("10.0.0.53", "10.0.0.54:5353")),))),
    ParseCase("stub-ipv6-with-port", stubs({"v6.test": ["[fd00::53]:5353", "fd00::54"]}),
              KubeDns((("v6.test", ("[fd00::53]:5353", "fd00::54")),))),
    ParseCase("upstreams", upstreams(["8.8.8.8", "1.1.1.1:53"]),
              KubeDns((), ("8.8.8.8", "1.1.1.1:53"))),
    ParseCase("bad-json", {"stubDomains": "{"}, error="stubDomains"),
    ParseCase("stub-not-object", stubs(["10.0.0.1"]), error="stubDomains"),
    ParseCase("stub-empty-list", stubs({"a.test": []}), error="stubDomains.a.test"),
    ParseCase("stub-name-server", stubs({"a.test": ["ns.a.test"]}), error="stubDomains.a.test[0]"),
    ParseCase("stub-bad-port", stubs({"a.test": ["10.0.0.1:99999"]}), error="stubDomains.a.test[0]"),
    ParseCase("stub-bad-domain", stubs({"a..test": ["10.0.0.1"]}), error="stubDomains.a..test"),
    ParseCase("stub-twice", {"stubDomains": '{"a.test": ["10.0.0.1"], "A.test.": ["10.0.0.2"]}'},
              error="stubDomains.A.test."),
    ParseCase("upstreams-four", upstreams(["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]),
              error="upstreamNameservers"),
    ParseCase("upstream-not-string", upstreams([53]), error="upstreamNameservers[0]"),
]  # fmt: skip


@pytest.mark.parametrize("case", PARSE, ids=lambda c: c.id)
def test_parse(case: ParseCase) -> None:
    if case.error:
        with pytest.raises(KubeDnsError) as raised:
            parse(case.data)
        assert raised.value.field == case.error
    else:
        assert parse(case.data) == case.expected


CM = KubeDns((("corp.example", ("10.0.0.53",)), ("lab.example", ("10.0.0.60",))), ("8.8.8.8",))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({}, {"stub_domains": {"corp.example": ["10.0.0.53"],
                                           "lab.example": ["10.0.0.60"]},
                          "upstream": ["8.8.8.8"]}, id="fills-in"),
        pytest.param({"stub_domains": {"Corp.Example.": ["192.0.2.1"]}, "upstream": ["9.9.9.9"]},
                     {"stub_domains": {"Corp.Example.": ["192.0.2.1"], "lab.example": ["10.0.0.60"]},
                      "upstream": ["9.9.9.9"]}, id="file-and-flags-win"),
    ],
)  # fmt: skip
def test_overlay(values: dict[str, Any], expected: dict[str, Any]) -> None:
    assert overlay(values, CM) == expected
    assert overlay(values, KubeDns()) == values


class Recorder:
    def __init__(self, reject: str = "") -> None:
        self.reject = reject
        self.changes = 0

    def validate(self, kube_dns: KubeDns) -> None:
        if self.reject and any(zone == self.reject for zone, _ in kube_dns.stub_domains):
            raise ConfigError(f"stub_domains.{self.reject}", "rejected by the config")

    def changed(self) -> None:
        self.changes += 1


def test_follower_keeps_the_last_good_configmap() -> None:
    recorder = Recorder(reject="loop.test")
    follower = KubeDnsFollower(recorder.validate, recorder.changed)
    assert follower.offer(stubs({"a.test": ["10.0.0.1"]}), "t")
    assert follower.current.stub_domains == (("a.test", ("10.0.0.1",)),)
    assert not follower.offer(stubs({"a.test": ["10.0.0.1"]}), "t")  # unchanged: no reload
    assert not follower.offer({"stubDomains": "{"}, "t")  # does not parse
    assert not follower.offer(stubs({"loop.test": ["10.0.0.9"]}), "t")  # the config rejects it
    assert follower.current.stub_domains == (("a.test", ("10.0.0.1",)),)
    assert follower.offer(None, "t")  # deleted: back to nothing
    assert follower.current == KubeDns()
    assert (follower.applied, follower.rejected, recorder.changes) == (2, 2, 2)
    assert follower.seen.is_set()


def test_directory_source_reports_each_change_once(tmp_path: Path) -> None:
    recorder = Recorder()
    follower = KubeDnsFollower(recorder.validate, recorder.changed)
    source = DirectorySource(str(tmp_path / "kube-dns"), follower)
    source.poll()  # no directory: an empty ConfigMap
    assert follower.seen.is_set()
    assert recorder.changes == 0
    (tmp_path / "kube-dns").mkdir()
    (tmp_path / "kube-dns" / "upstreamNameservers").write_text('["10.1.1.1"]')
    source.poll()
    source.poll()
    assert follower.current.upstream_nameservers == ("10.1.1.1",)
    assert recorder.changes == 1


@pytest.mark.parametrize(
    ("values", "expected", "error"),
    [
        pytest.param({}, KubeDnsSettings(), "", id="off"),
        pytest.param({"kube_dns_configmap": "kube-system/kube-dns"},
                     KubeDnsSettings(("kube-system", "kube-dns")), "", id="api"),
        pytest.param({"kube_dns_configmap_dir": "/etc/kube-dns"},
                     KubeDnsSettings(None, "/etc/kube-dns"), "", id="dir"),
        pytest.param({"kube_dns_configmap": "kube-dns"}, None, "kube_dns_configmap", id="no-ns"),
        pytest.param({"kube_dns_configmap": "a/b", "kube_dns_configmap_dir": "/x"}, None,
                     "kube_dns_configmap", id="both"),
        pytest.param({"kube_dns_configmap_dir": 3}, None, "kube_dns_configmap_dir", id="dir-type"),
    ],
)  # fmt: skip
def test_settings(values: dict[str, Any], expected: KubeDnsSettings | None, error: str) -> None:
    if error:
        with pytest.raises(ConfigError) as raised:
            settings_of(values)
        assert raised.value.field == error
    else:
        assert settings_of(values) == expected
