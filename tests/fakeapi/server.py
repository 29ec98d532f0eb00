"""A fake Kubernetes API server that speaks the real wire protocol, for testing the watcher.

This module owns everything the fake does:

* the in-memory object store, one global resourceVersion counter (etcd-like: one resource's RVs
  have gaps) and a per-resource event history with compaction (``compact()``) and 410 Gone;
* the HTTP/1.1 protocol: JSON lists (``kind: ServiceList``, ``metadata.resourceVersion``,
  ``metadata.continue``), chunked watch streams of newline-delimited JSON events, bookmarks,
  ``timeoutSeconds``, watch-list (``sendInitialEvents``), ``Status`` error bodies;
* label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, exists, ``!key``) and field
  selectors (``metadata.name``, ``metadata.namespace``, a few per-kind paths such as
  ``spec.nodeName`` on pods);
* paging with ``limit``/``continue`` over a consistent snapshot, with expiring continue tokens;
* fault hooks (stall after headers, close mid-stream, 5xx/429 for the next n requests,
  stop/restart on the same port), optional TLS with a bearer token, and the request log.

Standard library only.  It binds 127.0.0.1, port 0 by default, and serves from daemon threads
that ``stop()`` ends and joins.  Tests mutate it directly with ``apply()``/``delete()``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import datetime as _dt
import json
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

JSON = dict[str, Any]

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

INITIAL_EVENTS_END_ANNOTATION = "k8s.io/initial-events-end"
CONTINUE_EXPIRED_MESSAGE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this response "
    "to retrieve the remainder of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted between the time the "
    "first chunk was returned and now may show up in the list."
)
_UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})
_BOOL_VALUES = {
    "1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
    "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False,
}  # fmt: skip
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


# --------------------------------------------------------------------------------------------
# Resource types


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the URL space and what its selectors support."""

    kind: str
    plural: str
    group: str
    version: str
    namespaced: bool
    field_paths: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        """URL prefix of the group version, e.g. ``/api/v1`` or ``/apis/discovery.k8s.io/v1``."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def list_kind(self) -> str:
        """Kind of the list reply, e.g. ``ServiceList``."""
        return f"{self.kind}List"

    def supports_field(self, path: str) -> bool:
        """Whether ``fieldSelector`` may use ``path`` on this resource (as the real server)."""
        base = ("metadata.name", "metadata.namespace") if self.namespaced else ("metadata.name",)
        return path in base or path in self.field_paths


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("Namespace", "namespaces", "", "v1", False, ("status.phase",)),
    ResourceType("Service", "services", "", "v1", True, ("spec.clusterIP", "spec.type")),
    ResourceType(
        "Pod",
        "pods",
        "",
        "v1",
        True,
        (
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
    ),
    ResourceType("Endpoints", "endpoints", "", "v1", True),
    ResourceType("ConfigMap", "configmaps", "", "v1", True),
    ResourceType("EndpointSlice", "endpointslices", "discovery.k8s.io", "v1", True),
)
_BY_NAME: dict[str, ResourceType] = {}
for _rt in RESOURCES:
    _BY_NAME[_rt.kind.lower()] = _rt
    _BY_NAME[_rt.plural] = _rt
_BY_PREFIX_PLURAL: dict[tuple[str, str], ResourceType] = {
    (r.prefix, r.plural): r for r in RESOURCES
}


def _resource(kind_or_plural: str) -> ResourceType:
    try:
        return _BY_NAME[kind_or_plural.lower()]
    except KeyError:
        known = ", ".join(r.kind for r in RESOURCES)
        raise ValueError(f"unknown kind {kind_or_plural!r}; the fake serves {known}") from None


# --------------------------------------------------------------------------------------------
# Selectors and query parsing


class SelectorError(ValueError):
    """A label or field selector the real API server would reject with 400."""


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET_TERM = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>notin|in)\s*\((?P<values>[^()]*)\)$")


@dataclass(frozen=True)
class LabelRequirement:
    """One term of a label selector."""

    key: str
    op: Literal["=", "!=", "in", "notin", "exists", "!"]
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics: ``!=`` and ``notin`` also match objects without the key."""
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    terms.append("".join(current).strip())
    return terms


def _check_key(key: str, text: str) -> str:
    if not _LABEL_KEY.match(key):
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if not _LABEL_VALUE.match(value) or len(value) > 63:
        raise SelectorError(
            f"unable to parse requirement: invalid label value {value!r} in {text!r}"
        )
    return value


def parse_label_selector(text: str | None) -> list[LabelRequirement]:
    """Parse ``a=b,c!=d,e in (x,y),f notin (z),key,!key``; raise SelectorError if malformed."""
    if text is None or not text.strip():
        return []
    requirements: list[LabelRequirement] = []
    for term in _split_terms(text):
        if not term:
            raise SelectorError(f"found empty requirement in label selector {text!r}")
        set_match = _SET_TERM.match(term)
        if set_match:
            key = _check_key(set_match["key"], text)
            values = frozenset(
                _check_value(v.strip(), text) for v in set_match["values"].split(",")
            )
            op: Literal["in", "notin"] = "in" if set_match["op"] == "in" else "notin"
            requirements.append(LabelRequirement(key, op, values))
        elif term.startswith("!"):
            requirements.append(LabelRequirement(_check_key(term[1:].strip(), text), "!"))
        elif "!=" in term:
            key, _, value = term.partition("!=")
            requirements.append(
                LabelRequirement(
                    _check_key(key.strip(), text),
                    "!=",
                    frozenset({_check_value(value.strip(), text)}),
                )
            )
        elif "=" in term:
            key, _, value = term.partition("==") if "==" in term else term.partition("=")
            requirements.append(
                LabelRequirement(
                    _check_key(key.strip(), text),
                    "=",
                    frozenset({_check_value(value.strip(), text)}),
                )
            )
        else:
            requirements.append(LabelRequirement(_check_key(term, text), "exists"))
    return requirements


@dataclass(frozen=True)
class FieldRequirement:
    """One term of a field selector: ``path=value``, ``path==value`` or ``path!=value``."""

    path: str
    equal: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Compare the field's string form (missing fields compare as the empty string)."""
        return (_field_value(obj, self.path) == self.value) == self.equal


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def parse_field_selector(text: str | None, rtype: ResourceType) -> list[FieldRequirement]:
    """Parse a field selector, rejecting paths the real server does not index for ``rtype``."""
    if text is None or not text.strip():
        return []
    requirements: list[FieldRequirement] = []
    for term in text.split(","):
        term = term.strip()
        if "!=" in term:
            path, _, value = term.partition("!=")
            equal = False
        elif "==" in term:
            path, _, value = term.partition("==")
            equal = True
        elif "=" in term:
            path, _, value = term.partition("=")
            equal = True
        else:
            raise SelectorError(f"invalid selector: {text!r}; can't understand {term!r}")
        path = path.strip()
        if not rtype.supports_field(path):
            raise SelectorError(f"field label not supported: {path}")
        requirements.append(FieldRequirement(path, equal, value.strip()))
    return requirements


def parse_bool(value: str) -> bool:
    """Go ``strconv.ParseBool``, which the API server uses: ``true``, ``True``, ``1`` ... ."""
    try:
        return _BOOL_VALUES[value]
    except KeyError:
        raise ValueError(f"invalid boolean {value!r}") from None


# --------------------------------------------------------------------------------------------
# Public records


@dataclass
class RequestRecord:
    """One request the fake received, in arrival order (``FakeKube.requests``).

    ``verb`` is the API server's audit verb: ``list``, ``watch``, ``get``, or ``""`` for
    anything else (health, version, unknown paths).  ``time`` is ``time.monotonic()``.
    ``status`` is the HTTP status sent (``None`` until the response starts).
    """

    method: str
    path: str
    query: dict[str, str]
    time: float
    verb: str = ""
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class Fault:
    """An armed fault, returned by the fault hooks; it applies to the next ``remaining`` matches.

    ``hits`` counts the requests it has affected; ``triggered`` is set at the first one
    (stalls set it after the response headers went out).  ``release()`` ends a stall early.
    """

    action: Literal["error", "stall", "close"]
    remaining: int
    verb: str | None = None
    resource: str | None = None
    status: int = 500
    retry_after: int | None = None
    seconds: float | None = None
    after_events: int = 0
    message: str | None = None
    hits: int = 0
    triggered: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        """End the stall now (for requests being stalled and any still to come)."""
        self.released.set()

    def cancel(self) -> None:
        """Disarm: no further requests are affected."""
        self.remaining = 0

    def _matches(self, record: RequestRecord) -> bool:
        if self.remaining <= 0:
            return False
        if self.verb is not None and record.verb != self.verb:
            return False
        return self.resource is None or record.resource == self.resource


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for serving TLS: a CA certificate (give it to the client) and the leaf pair."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class InClusterFiles:
    """What ``kubernetes.config.InClusterConfigLoader`` needs to reach the fake."""

    token_file: Path
    cert_file: Path
    environ: dict[str, str]


# --------------------------------------------------------------------------------------------
# TLS material


def make_tls_files(
    directory: Path | str, hosts: Iterable[str] = ("127.0.0.1", "localhost")
) -> TLSFiles:
    """Create a throwaway CA and a server certificate for ``hosts`` (IPs and DNS names).

    Prefers the ``openssl`` CLI; falls back to the ``cryptography`` package if it is installed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hosts = tuple(hosts)
    if shutil.which("openssl"):
        return _make_tls_with_openssl(directory, hosts)
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise RuntimeError("TLS needs the openssl CLI or the cryptography package") from None
    return _make_tls_with_cryptography(directory, hosts)


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _make_tls_with_openssl(directory: Path, hosts: tuple[str, ...]) -> TLSFiles:
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    san = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={san}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_cert, "-days", "2",
         "-subj", "/CN=fakekube-ca", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={hosts[0]}"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
         "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "2", "-extfile", ext, "-out", cert],
    ]  # fmt: skip
    for command in commands:
        done = subprocess.run(
            [str(part) for part in command], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, command))} failed: {done.stderr.strip()}")
    return TLSFiles(ca_cert=ca_cert, cert=cert, key=key)


def _make_tls_with_cryptography(directory: Path, hosts: tuple[str, ...]) -> TLSFiles:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.UTC)
    not_before, not_after = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakekube-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts
    ]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = TLSFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    files.ca_cert.write_bytes(ca.public_bytes(pem))
    files.cert.write_bytes(leaf.public_bytes(pem))
    files.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


# --------------------------------------------------------------------------------------------
# Internal state


@dataclass(frozen=True)
class _Event:
    rv: int
    type: str
    obj: JSON  # the state after the change (for DELETED: last state, stamped with the delete RV)
    old: JSON | None  # the state before the change


@dataclass
class _Snapshot:
    created: float
    rv: int
    items: list[tuple[str, JSON]]  # (etcd-like key, object), sorted by key


@dataclass(eq=False)
class _Watcher:
    """An open watch stream: its queue of not-yet-sent events and the last RV it sent."""

    kind: str
    plural: str
    cursor: int
    pending: deque[_Event] = field(default_factory=deque)
    expired: bool = False


@dataclass
class _Scope:
    rtype: ResourceType
    namespace: str | None
    labels: list[LabelRequirement]
    fields: list[FieldRequirement]

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        return all(r.matches(labels) for r in self.labels) and all(
            r.matches(obj) for r in self.fields
        )


class _ApiError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: JSON | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, HTTPStatus(code).phrase.replace(" ", ""))
        self.headers = dict(headers or {})
        self.details = details

    def status(self) -> JSON:
        return _status(self.code, self.reason, self.message, self.details)


def _status(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    body: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        body["details"] = details
    body["code"] = code
    return body


def _key(obj: Mapping[str, Any], rtype: ResourceType) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if rtype.namespaced else str(meta["name"])


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _list_item(obj: JSON) -> JSON:
    """Items of a typed list carry no kind/apiVersion on the wire, as from the real server."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


# --------------------------------------------------------------------------------------------
# The fake


class FakeKube:
    """In-process fake kube-apiserver.  Use as ``with FakeKube() as kube:`` or start()/stop().

    Constructor arguments (all keyword-only, all also mutable attributes unless noted):

    * ``host``/``port``: where to bind (default 127.0.0.1, port 0 = pick a free one; after the
      first start ``port`` is the bound port and a restart reuses it);
    * ``bookmark_interval``: seconds between BOOKMARK events on watches that asked for them
      (real server: about 60 s); ``None`` disables bookmarks;
    * ``continue_ttl``: seconds a continue token stays valid (real server: about 5 min);
    * ``watch_gone``: how a watch from a compacted RV fails: ``"event"`` (HTTP 200 then an
      ERROR event carrying a 410 Status, as the real apiserver does) or ``"status"`` (HTTP 410);
    * ``gone_reason``: the Status reason of those 410s, ``"Expired"`` (``"Gone"`` on old servers);
    * ``watch_list``: whether ``sendInitialEvents`` is accepted (``False`` = 422, like 1.33);
    * ``tls``: ``True`` to generate a CA + certificate for 127.0.0.1 (openssl CLI, else
      ``cryptography``) into ``tls_dir`` (a private temp dir if ``None``), or ready ``TLSFiles``
      (not mutable after construction);
    * ``token``: if set, every API request must carry ``Authorization: Bearer <token>``;
    * ``initial_rv``: the resourceVersion of the empty store.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bookmark_interval: float | None = 60.0,
        continue_ttl: float = 300.0,
        watch_gone: Literal["event", "status"] = "event",
        gone_reason: str = "Expired",
        watch_list: bool = True,
        tls: bool | TLSFiles = False,
        tls_dir: Path | str | None = None,
        token: str | None = None,
        initial_rv: int = 1000,
    ) -> None:
        self.host = host
        self.port = port
        self.bookmark_interval = bookmark_interval
        self.continue_ttl = continue_ttl
        self.watch_gone: Literal["event", "status"] = watch_gone
        self.gone_reason = gone_reason
        self.watch_list = watch_list
        self.token = token
        self.errors: list[str] = []
        """Tracebacks of unexpected exceptions inside the fake (client disconnects excluded)."""

        self.tls_files: TLSFiles | None = None
        self._ssl_context: ssl.SSLContext | None = None
        if tls:
            if isinstance(tls, TLSFiles):
                self.tls_files = tls
            else:
                if tls_dir is None:
                    tls_dir = tempfile.mkdtemp(prefix="fakekube-tls-")
                    weakref.finalize(self, shutil.rmtree, tls_dir, ignore_errors=True)
                self.tls_files = make_tls_files(tls_dir, hosts=(host, "localhost"))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls_files.cert, self.tls_files.key)
            self._ssl_context = context

        self._cond = threading.Condition(threading.RLock())
        self._rv = initial_rv
        self._compacted_rv = 0
        self._store: dict[str, dict[str, JSON]] = {r.kind: {} for r in RESOURCES}
        self._history: dict[str, list[_Event]] = {r.kind: [] for r in RESOURCES}
        self._snapshots: dict[tuple[str, int], _Snapshot] = {}
        self._requests: list[RequestRecord] = []
        self._faults: list[Fault] = []
        self._watchers: dict[int, _Watcher] = {}
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._crashing = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeKube:
        """Bind and serve in a daemon thread; after stop(), rebinds the same port."""
        if self._server is not None:
            raise RuntimeError("FakeKube is already running")
        with self._cond:
            self._stopping = False
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakekube-serve",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, *, graceful: bool = True) -> None:
        """Stop serving: end watches, drop every connection, close the port, join all threads.

        ``graceful``: open watches first end cleanly (terminating chunk), as on an apiserver
        shutdown; with ``graceful=False`` every connection is cut at once, as on a crash, and
        clients reading a watch get a protocol error.  Stalled requests are cut either way.
        State (objects, resourceVersion, history, request log) survives; ``start()`` again to
        come back on the same port, like an apiserver restart backed by the same etcd.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._crashing = not graceful
            self._cond.notify_all()
        server.shutdown()  # no more accepts
        if graceful:
            with self._cond:
                self._cond.wait_for(lambda: not self._watchers, timeout=2.0)
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            _shutdown_socket(conn)
        server.server_close()  # closes the listener: new connections are refused
        if thread is not None:
            thread.join()
        with self._cond:
            handlers, self._threads = self._threads, []
        deadline = time.monotonic() + 5.0
        for handler in handlers:
            handler.join(max(0.0, deadline - time.monotonic()))
            if handler.is_alive():
                self.errors.append(f"stop(): handler thread {handler.name} did not end")
        self._server = None
        self._thread = None

    def restart(self, *, graceful: bool = True) -> FakeKube:
        """``stop()`` then ``start()`` on the same port."""
        self.stop(graceful=graceful)
        return self.start()

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with TLS); valid once started."""
        if not self.port:
            raise RuntimeError("FakeKube has no port yet; call start() first")
        scheme = "https" if self._ssl_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate to verify the fake's TLS certificate with (None without TLS)."""
        return self.tls_files.ca_cert if self.tls_files else None

    # ---- client configuration helpers --------------------------------------------------------

    def kubeconfig(self) -> str:
        """A kubeconfig (YAML, but written as JSON, which YAML accepts) pointing at the fake."""
        cluster: JSON = {"server": self.url}
        if self.ca_file:
            cluster["certificate-authority"] = str(self.ca_file)
        user: JSON = {"token": self.token} if self.token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        return json.dumps(config, indent=2) + "\n"

    def write_kubeconfig(self, path: Path | str) -> Path:
        """Write ``kubeconfig()`` to ``path`` and return it."""
        path = Path(path)
        path.write_text(self.kubeconfig())
        return path

    def write_incluster_files(self, directory: Path | str) -> InClusterFiles:
        """Write a token file and ca.crt for ``InClusterConfigLoader`` (needs TLS and a token)."""
        if self.ca_file is None or self.token is None:
            raise RuntimeError("the in-cluster path needs FakeKube(tls=True, token=...)")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        token_file = directory / "token"
        token_file.write_text(self.token)  # no trailing newline, as the kubelet writes it
        cert_file = directory / "ca.crt"
        cert_file.write_bytes(self.ca_file.read_bytes())
        environ = {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}
        return InClusterFiles(token_file=token_file, cert_file=cert_file, environ=environ)

    # ---- mutations ---------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion, as the string clients see."""
        with self._cond:
            return str(self._rv)

    def apply(self, obj: Mapping[str, Any]) -> JSON:
        """Create or replace an object (``obj['kind']`` picks the resource); return the stored copy.

        Bumps the global resourceVersion and records an ADDED or MODIFIED event.  Namespaced
        objects without ``metadata.namespace`` go to ``default``.  ``uid`` and
        ``creationTimestamp`` are filled in on create and kept on update.
        """
        if "kind" not in obj:
            raise ValueError("apply() needs an object with a 'kind'")
        rtype = _resource(str(obj["kind"]))
        new: JSON = copy.deepcopy(dict(obj))
        new["kind"] = rtype.kind
        api_version = new.setdefault("apiVersion", rtype.api_version)
        if api_version != rtype.api_version:
            raise ValueError(f"{rtype.kind} is served as {rtype.api_version}, not {api_version}")
        meta = new.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError("apply() needs metadata.name")
        if rtype.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        key = _key(new, rtype)
        with self._cond:
            old = self._store[rtype.kind].get(key)
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            if old is not None:
                meta["uid"] = old["metadata"]["uid"]
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            else:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now_iso())
            self._store[rtype.kind][key] = new
            event_type = "ADDED" if old is None else "MODIFIED"
            self._record(rtype.kind, _Event(self._rv, event_type, new, old))
            return copy.deepcopy(new)

    def delete(self, kind: str, namespace: str | None, name: str) -> JSON:
        """Delete an object and return its last state; raise KeyError if it does not exist.

        ``namespace`` is ignored for cluster-scoped kinds (Namespace).  Deleting a Namespace does
        not delete its contents.  The DELETED event carries the deletion's resourceVersion.
        """
        rtype = _resource(kind)
        key = f"{namespace}/{name}" if rtype.namespaced else name
        with self._cond:
            old = self._store[rtype.kind].pop(key, None)
            if old is None:
                raise KeyError(f"{rtype.kind} {key} does not exist")
            self._rv += 1
            final = dict(old)
            final["metadata"] = {**old["metadata"], "resourceVersion": str(self._rv)}
            self._record(rtype.kind, _Event(self._rv, "DELETED", final, old))
            return copy.deepcopy(final)

    def _record(self, kind: str, event: _Event) -> None:
        """Append to the history and hand to every open watch of the kind (under the lock).

        Like the watch cache, a running watch has its own queue, so a later ``compact()`` never
        takes events away from it.
        """
        self._history[kind].append(event)
        for watcher in self._watchers.values():
            if watcher.kind == kind:
                watcher.pending.append(event)
        self._cond.notify_all()

    def compact(self, rv: int | str | None = None) -> int:
        """Drop history with resourceVersion <= ``rv`` (default: the current RV); return it.

        Afterwards a new watch from an older RV fails with 410 (see ``watch_gone``) and
        continue tokens from older snapshots expire.  Running watches are not affected (they
        have their own queues, as in the real watch cache); see ``expire_watches()``.
        """
        with self._cond:
            target = self._rv if rv is None else min(int(rv), self._rv)
            if target <= self._compacted_rv:
                return self._compacted_rv
            self._compacted_rv = target
            for history in self._history.values():
                del history[: bisect.bisect_right(history, target, key=lambda e: e.rv)]
            for snap_key in [k for k in self._snapshots if k[1] < target]:
                del self._snapshots[snap_key]
            self._cond.notify_all()
            return target

    def expire_watches(self, resource: str | None = None) -> int:
        """Send every open watch (of ``resource``, kind or plural) a 410 ERROR event and end it.

        This is what a client sees when the apiserver's watch cache drops a slow watcher or is
        re-initialised.  Returns the number of watches affected.
        """
        plural = _resource(resource).plural if resource else None
        with self._cond:
            hit = [w for w in self._watchers.values() if plural is None or w.plural == plural]
            for watcher in hit:
                watcher.expired = True
            self._cond.notify_all()
            return len(hit)

    def expire_continue_tokens(self) -> None:
        """Make every continue token issued so far answer 410 Expired."""
        with self._cond:
            self._snapshots.clear()

    # ---- inspection --------------------------------------------------------------------------

    def get(self, kind: str, namespace: str | None, name: str) -> JSON | None:
        """The stored object, or None."""
        rtype = _resource(kind)
        key = f"{namespace}/{name}" if rtype.namespaced else name
        with self._cond:
            obj = self._store[rtype.kind].get(key)
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str, namespace: str | None = None) -> list[JSON]:
        """All stored objects of a kind (optionally one namespace), in key order."""
        rtype = _resource(kind)
        with self._cond:
            items = sorted(self._store[rtype.kind].items())
            return [
                copy.deepcopy(obj)
                for _, obj in items
                if namespace is None or obj["metadata"].get("namespace") == namespace
            ]

    def events(self, kind: str) -> list[JSON]:
        """The retained history of a kind as watch events (``type``, ``object``)."""
        rtype = _resource(kind)
        with self._cond:
            return [
                {"type": e.type, "object": copy.deepcopy(e.obj)} for e in self._history[rtype.kind]
            ]

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._cond:
            return list(self._requests)

    def requests_for(
        self, *, verb: str | None = None, resource: str | None = None
    ) -> list[RequestRecord]:
        """Logged requests with this verb (list/watch/get) and resource (kind or plural)."""
        plural = _resource(resource).plural if resource else None
        return [
            r
            for r in self.requests
            if (verb is None or r.verb == verb) and (plural is None or r.resource == plural)
        ]

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._cond:
            self._requests.clear()

    def active_watches(self, resource: str | None = None) -> int:
        """Watch streams currently open (headers sent), optionally of one resource."""
        plural = _resource(resource).plural if resource else None
        with self._cond:
            return sum(1 for w in self._watchers.values() if plural is None or w.plural == plural)

    # ---- fault hooks -------------------------------------------------------------------------

    def _arm(self, fault: Fault) -> Fault:
        if fault.resource is not None:
            fault.resource = _resource(fault.resource).plural
        with self._cond:
            self._faults.append(fault)
        return fault

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        verb: str | None = None,
        resource: str | None = None,
        retry_after: int | None = None,
        message: str | None = None,
    ) -> Fault:
        """Answer the next ``n`` matching requests with HTTP ``status`` and a Status body.

        ``verb`` (list/watch/get) and ``resource`` (kind or plural) narrow what matches;
        ``retry_after`` adds a ``Retry-After`` header and ``details.retryAfterSeconds``.
        """
        return self._arm(
            Fault(
                "error",
                n,
                verb=verb,
                resource=resource,
                status=status,
                retry_after=retry_after,
                message=message,
            )
        )

    def throttle_next(
        self,
        n: int = 1,
        *,
        retry_after: int = 1,
        verb: str | None = None,
        resource: str | None = None,
    ) -> Fault:
        """Answer the next ``n`` matching requests with 429 TooManyRequests and Retry-After."""
        return self.fail_next(n, status=429, verb=verb, resource=resource, retry_after=retry_after)

    def stall_next(
        self,
        n: int = 1,
        *,
        seconds: float | None = None,
        verb: str | None = "watch",
        resource: str | None = None,
    ) -> Fault:
        """Send the headers of the next ``n`` matching responses, then send nothing.

        The connection stays open for ``seconds`` (``None``: until ``release()``,
        ``release_stalls()`` or ``stop()``); afterwards the response continues normally (a
        watch streams from its requested RV, so nothing is lost).  Defaults to watches only.
        """
        return self._arm(Fault("stall", n, verb=verb, resource=resource, seconds=seconds))

    def close_next_watch(
        self, after_events: int = 0, n: int = 1, *, resource: str | None = None
    ) -> Fault:
        """Cut the next ``n`` watch streams after ``after_events`` event lines (bookmarks count).

        The connection is dropped without the terminating chunk, as a dying proxy or apiserver
        would do, so the client sees a protocol error rather than a clean end of stream.
        """
        return self._arm(
            Fault("close", n, verb="watch", resource=resource, after_events=after_events)
        )

    def release_stalls(self) -> None:
        """End every stall now."""
        with self._cond:
            for fault in self._faults:
                if fault.action == "stall":
                    fault.release()

    def clear_faults(self) -> None:
        """Disarm all faults and end running stalls."""
        self.release_stalls()
        with self._cond:
            for fault in self._faults:
                fault.cancel()
            self._faults.clear()

    def _take_fault(self, record: RequestRecord) -> Fault | None:
        with self._cond:
            for fault in self._faults:
                if fault._matches(record):
                    fault.remaining -= 1
                    fault.hits += 1
                    if fault.action != "stall":
                        fault.triggered.set()
                    return fault
        return None

    # ---- internals used by the handler -------------------------------------------------------

    def _log(self, record: RequestRecord) -> None:
        with self._cond:
            self._requests.append(record)

    def _register(self, conn: socket.socket) -> None:
        with self._cond:
            self._connections.add(conn)
            stopping = self._stopping
        if stopping:
            _shutdown_socket(conn)

    def _track(self, thread: threading.Thread) -> None:
        with self._cond:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _unregister(self, conn: socket.socket) -> None:
        with self._cond:
            self._connections.discard(conn)

    def _record_error(self) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # disconnects, resets, TLS failures, timeouts
            return
        with self._cond:
            self.errors.append(traceback.format_exc())

    def _list(
        self, scope: _Scope, query: Mapping[str, str]
    ) -> tuple[list[JSON], str, str | None, int | None]:
        """Items, list RV, continue token, remainingItemCount (under the lock)."""
        rtype = scope.rtype
        rv_param = query.get("resourceVersion", "")
        rv_match = query.get("resourceVersionMatch", "")
        cont = query.get("continue", "")
        limit = _int_param(query, "limit") or 0
        if limit < 0:
            raise _ApiError(422, "limit must be non-negative")
        now = time.monotonic()
        with self._cond:
            if cont:
                if rv_param:
                    raise _ApiError(
                        400, "specifying resource version is not allowed when using continue"
                    )
                snap_rv, start = _decode_continue(cont)
                snapshot = self._snapshots.get((rtype.kind, snap_rv))
                if snapshot is None or now - snapshot.created > self.continue_ttl:
                    raise _ApiError(410, CONTINUE_EXPIRED_MESSAGE, reason="Expired")
            else:
                if rv_match and not rv_param:
                    raise _ApiError(
                        422, "resourceVersionMatch is forbidden unless resourceVersion is provided"
                    )
                if rv_match not in ("", "NotOlderThan", "Exact"):
                    raise _ApiError(422, f"resourceVersionMatch: Unsupported value: {rv_match!r}")
                if rv_param not in ("", "0"):
                    requested = _parse_rv(rv_param)
                    if requested > self._rv:
                        raise _too_large(requested, self._rv)
                    if rv_match == "Exact" and requested != self._rv:
                        if requested < self._compacted_rv:
                            raise self._gone(requested)
                        raise _ApiError(
                            400,
                            "fake apiserver: resourceVersionMatch=Exact is only supported "
                            "for the current resourceVersion",
                        )
                items = sorted(self._store[rtype.kind].items())
                snapshot = _Snapshot(now, self._rv, items)
                start = ""
            selected = [
                (key, obj) for key, obj in snapshot.items if key >= start and scope.matches(obj)
            ]
            token: str | None = None
            remaining: int | None = None
            if limit and len(selected) > limit:
                last_key = selected[limit - 1][0]
                token = _encode_continue(snapshot.rv, last_key + "\x00")
                if not scope.labels and not scope.fields:
                    remaining = len(selected) - limit
                selected = selected[:limit]
                self._prune_snapshots(now)
                self._snapshots[(rtype.kind, snapshot.rv)] = snapshot
            return [_list_item(obj) for _, obj in selected], str(snapshot.rv), token, remaining

    def _prune_snapshots(self, now: float) -> None:
        for snap_key, snap in list(self._snapshots.items()):
            if now - snap.created > self.continue_ttl:
                del self._snapshots[snap_key]

    def _gone(self, requested: int) -> _ApiError:
        return _ApiError(
            410,
            f"too old resource version: {requested} ({self._compacted_rv})",
            reason=self.gone_reason,
        )


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise _ApiError(400, f"invalid value for {name}: {value!r}") from None


def _parse_rv(value: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        rv = -1
    if rv < 0:
        raise _ApiError(400, f"invalid resource version: {value!r}")  # real: Invalid
    return rv


def _too_large(requested: int, current: int) -> _ApiError:
    return _ApiError(
        504,
        f"Timeout: Too large resource version: {requested}, current: {current}",
        reason="Timeout",
        headers={"Retry-After": "1"},
        details={
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
    )


def _encode_continue(rv: int, start: str) -> str:
    raw = _dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("bad version")
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError):
        raise _ApiError(400, "continue key is not valid: cannot decode the token") from None


def _shutdown_socket(conn: socket.socket) -> None:
    try:
        # socket.socket.shutdown, not SSLSocket.shutdown, which would also unwrap the TLS
        # object under a thread that may be reading from it.
        socket.socket.shutdown(conn, socket.SHUT_RDWR)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# HTTP layer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeKube) -> None:
        self.fake = fake
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # socketserver does not track daemon threads, so stop() could not join them: track here.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"fakekube-conn-{client_address[1]}",
            daemon=True,
        )
        self.fake._track(thread)
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.fake._record_error()


_PATH = re.compile(r"^(?P<prefix>/api/v1|/apis/[^/]+/[^/]+)(?P<rest>(/[^/]+)*)/?$")


@dataclass
class _Route:
    rtype: ResourceType
    namespace: str | None
    name: str | None


def _route(path: str) -> _Route | None:
    match = _PATH.match(path)
    if not match:
        return None
    prefix = match["prefix"]
    parts = [p for p in match["rest"].split("/") if p]
    namespace: str | None = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        namespace, parts = parts[1], parts[2:]
    if not parts or len(parts) > 2:
        return None
    rtype = _BY_PREFIX_PLURAL.get((prefix, parts[0]))
    if rtype is None or (namespace is not None and not rtype.namespaced):
        return None
    return _Route(rtype, namespace, parts[1] if len(parts) == 2 else None)


class _ClientGoneError(Exception):
    """The connection is gone (or the fake is stopping); just end the request."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = None

    # ---- connection lifecycle --------------------------------------------------------------

    def setup(self) -> None:
        fake = self.server.fake
        context = fake._ssl_context
        if context is not None:
            raw: socket.socket = self.request
            raw.settimeout(10)
            self.request = context.wrap_socket(raw, server_side=True)
            self.request.settimeout(None)
        fake._register(self.request)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._unregister(self.request)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is FakeKube.requests

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # ---- request handling -------------------------------------------------------------------

    def _handle(self) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        record = RequestRecord(
            method=self.command,
            path=split.path,
            query=query,
            time=time.monotonic(),
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        self._record = record
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        route = _route(split.path)
        watch_error: _ApiError | None = None
        if route is not None:
            record.resource = route.rtype.plural
            record.namespace = route.namespace
            record.name = route.name
            try:
                is_watch = parse_bool(query.get("watch", "false"))
            except ValueError:
                is_watch = False
                watch_error = _ApiError(400, f"invalid value for watch: {query['watch']!r}")
            record.verb = "get" if route.name else "watch" if is_watch else "list"
        fake._log(record)
        try:
            self._authenticate(split.path)
            fault = fake._take_fault(record)
            if fault is not None and fault.action == "error":
                raise _fault_error(fault)
            if watch_error is not None:
                raise watch_error
            if split.path in _UNAUTHENTICATED_PATHS:
                self._serve_plain(split.path)
            elif route is None:
                raise _ApiError(404, "the server could not find the requested resource")
            elif self.command != "GET":
                raise _ApiError(405, f"the fake apiserver only serves GET, not {self.command}")
            elif record.verb == "watch":
                self._serve_watch(route, query, fault)
            elif record.verb == "get":
                self._serve_get(route, fault)
            else:
                self._serve_list(route, query, fault)
        except _ApiError as err:
            self._send_json(err.code, err.status(), err.headers)
        except (_ClientGoneError, OSError):
            self.close_connection = True

    def _authenticate(self, path: str) -> None:
        token = self.server.fake.token
        if token is None or path in _UNAUTHENTICATED_PATHS:
            return
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        # The scheme is case-insensitive: the in-cluster loader sends "bearer <token>".
        if scheme.lower() != "bearer" or value.strip() != token:
            raise _ApiError(401, "Unauthorized")

    def _serve_plain(self, path: str) -> None:
        if path == "/version":
            self._send_json(
                200,
                {
                    "major": "1",
                    "minor": "34",
                    "gitVersion": "v1.34.0-fakekube",
                    "platform": "linux/amd64",
                },
            )
            return
        body = b"ok"
        self._start_response(200, "text/plain; charset=utf-8", {"Content-Length": str(len(body))})
        self._write(body)

    def _serve_get(self, route: _Route, fault: Fault | None) -> None:
        assert route.name is not None
        fake = self.server.fake
        obj = fake.get(route.rtype.kind, route.namespace, route.name)
        if obj is None:
            raise _ApiError(
                404,
                f'{route.rtype.plural} "{route.name}" not found',
                details={"name": route.name, "kind": route.rtype.plural},
            )
        self._send_json(200, obj, stall=fault)

    def _scope(self, route: _Route, query: Mapping[str, str]) -> _Scope:
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(query.get("fieldSelector"), route.rtype)
        except SelectorError as err:
            raise _ApiError(400, str(err)) from None
        return _Scope(route.rtype, route.namespace, labels, fields)

    def _serve_list(self, route: _Route, query: Mapping[str, str], fault: Fault | None) -> None:
        scope = self._scope(route, query)
        items, rv, token, remaining = self.server.fake._list(scope, query)
        metadata: JSON = {"resourceVersion": rv}
        if token is not None:
            metadata["continue"] = token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
        body = {
            "kind": route.rtype.list_kind,
            "apiVersion": route.rtype.api_version,
            "metadata": metadata,
            "items": items,
        }
        self._send_json(200, body, stall=fault)

    # ---- watch -----------------------------------------------------------------------------

    def _serve_watch(self, route: _Route, query: Mapping[str, str], fault: Fault | None) -> None:
        fake = self.server.fake
        rtype = route.rtype
        scope = self._scope(route, query)
        try:
            bookmarks = parse_bool(query.get("allowWatchBookmarks", "false"))
            send_initial_raw = query.get("sendInitialEvents")
            send_initial = None if send_initial_raw is None else parse_bool(send_initial_raw)
        except ValueError as err:
            raise _ApiError(400, str(err)) from None
        timeout = _int_param(query, "timeoutSeconds")
        rv_param = query.get("resourceVersion", "")
        rv_match = query.get("resourceVersionMatch", "")
        if send_initial is not None:
            prefix = 'ListOptions.meta.k8s.io "" is invalid: '
            if not fake.watch_list:
                raise _ApiError(
                    422,
                    prefix + "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for "
                    "watch unless the WatchList feature gate is enabled",
                )
            if send_initial and rv_match != "NotOlderThan":
                raise _ApiError(
                    422,
                    prefix + "resourceVersionMatch: Forbidden: sendInitialEvents requires "
                    "setting resourceVersionMatch to NotOlderThan",
                )
            if send_initial and not bookmarks:
                raise _ApiError(
                    422,
                    prefix + "allowWatchBookmarks: Forbidden: allowWatchBookmarks must be set "
                    "to true when sendInitialEvents is set",
                )

        gone: _ApiError | None = None
        with fake._cond:
            if rv_param in ("", "0"):
                synthetic = send_initial is not False
                cursor = fake._rv
            else:
                requested = _parse_rv(rv_param)
                if requested > fake._rv:
                    raise _too_large(requested, fake._rv)
                synthetic = bool(send_initial)
                cursor = requested
                if requested < fake._compacted_rv:
                    gone = fake._gone(requested)
            if gone is not None and fake.watch_gone == "status":
                raise gone
            initial: list[JSON] = []
            if gone is None and synthetic:
                initial = [
                    {"type": "ADDED", "object": obj}
                    for _, obj in sorted(fake._store[rtype.kind].items())
                    if scope.matches(obj)
                ]
                cursor = fake._rv
            if gone is None and send_initial:
                bookmark = _bookmark(rtype, cursor)
                bookmark["object"]["metadata"]["annotations"] = {
                    INITIAL_EVENTS_END_ANNOTATION: "true"
                }
                initial.append(bookmark)
            watcher = _Watcher(rtype.kind, rtype.plural, cursor)
            if gone is None:
                history = fake._history[rtype.kind]
                start = bisect.bisect_right(history, cursor, key=lambda e: e.rv)
                watcher.pending.extend(history[start:])
            watch_id = id(watcher)
            fake._watchers[watch_id] = watcher

        stream = _Stream(self, fault)
        try:
            self._start_response(200, "application/json", {"Transfer-Encoding": "chunked"})
            if fault is not None and fault.action == "stall":
                self._stall(fault)
            if gone is not None:
                stream.send([{"type": "ERROR", "object": gone.status()}])
                stream.end()
                return
            stream.send(initial)
            self._stream_events(stream, scope, watcher, bookmarks, timeout)
        finally:
            with fake._cond:
                fake._watchers.pop(watch_id, None)

    def _stream_events(
        self,
        stream: _Stream,
        scope: _Scope,
        watcher: _Watcher,
        bookmarks: bool,
        timeout: int | None,
    ) -> None:
        fake = self.server.fake
        started = time.monotonic()
        deadline = started + timeout if timeout else None
        next_bookmark = started + fake.bookmark_interval if fake.bookmark_interval else None
        while True:
            lines: list[JSON] = []
            with fake._cond:
                while True:
                    if fake._stopping:
                        if fake._crashing:
                            raise _ClientGoneError
                        stream.end()
                        return
                    if watcher.expired:
                        error = fake._gone(watcher.cursor).status()
                        lines = [{"type": "ERROR", "object": error}]
                        break
                    if watcher.pending:
                        while watcher.pending:
                            event = watcher.pending.popleft()
                            watcher.cursor = event.rv
                            translated = _translate(event, scope)
                            if translated is not None:
                                lines.append(translated)
                        if lines:
                            break
                        continue
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        stream.end()
                        return
                    if bookmarks and next_bookmark is not None and now >= next_bookmark:
                        # Every event of this kind up to the global RV is already sent.
                        watcher.cursor = fake._rv
                        lines = [_bookmark(scope.rtype, watcher.cursor)]
                        interval = fake.bookmark_interval
                        next_bookmark = now + interval if interval else None
                        break
                    waits = [1.0]
                    if deadline is not None:
                        waits.append(deadline - now)
                    if bookmarks and next_bookmark is not None:
                        waits.append(next_bookmark - now)
                    fake._cond.wait(max(min(waits), 0.001))
            stream.send(lines)
            if lines[0]["type"] == "ERROR":
                stream.end()
                return

    def _stall(self, fault: Fault) -> None:
        fake = self.server.fake
        fault.triggered.set()
        deadline = None if fault.seconds is None else time.monotonic() + fault.seconds
        while not fault.released.is_set():
            if fake._stopping:
                raise _ClientGoneError
            if deadline is not None and time.monotonic() >= deadline:
                return
            fault.released.wait(0.02)

    # ---- low-level output ------------------------------------------------------------------

    def _start_response(self, code: int, content_type: str, headers: Mapping[str, str]) -> None:
        self._record.status = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()  # flushes the header block to the socket

    def _send_json(
        self,
        code: int,
        body: JSON,
        headers: Mapping[str, str] | None = None,
        *,
        stall: Fault | None = None,
    ) -> None:
        data = _dumps(body)
        self._start_response(
            code, "application/json", {**(headers or {}), "Content-Length": str(len(data))}
        )
        if stall is not None and stall.action == "stall":
            self._stall(stall)
        self._write(data)

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()


class _Stream:
    """Writes watch events as HTTP/1.1 chunks, one event (JSON + newline) per chunk."""

    def __init__(self, handler: _Handler, fault: Fault | None) -> None:
        self.handler = handler
        self.sent = 0
        closing = fault is not None and fault.action == "close"
        self.cut_after = fault.after_events if fault is not None and closing else None

    def send(self, events: list[JSON]) -> None:
        for event in events:
            if self.cut_after is not None and self.sent >= self.cut_after:
                self.cut()
            data = _dumps(event) + b"\n"
            self.handler._write(b"%x\r\n%s\r\n" % (len(data), data))
            self.sent += 1
        if self.cut_after is not None and self.sent >= self.cut_after:
            self.cut()

    def end(self) -> None:
        """The terminating zero-length chunk: a clean end of the watch."""
        self.handler._write(b"0\r\n\r\n")

    def cut(self) -> None:
        self.handler.close_connection = True
        _shutdown_socket(self.handler.connection)
        raise _ClientGoneError


def _bookmark(rtype: ResourceType, rv: int) -> JSON:
    return {
        "type": "BOOKMARK",
        "object": {
            "kind": rtype.kind,
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(rv)},
        },
    }


def _translate(event: _Event, scope: _Scope) -> JSON | None:
    """The event as this watch sees it: selector transitions become ADDED/DELETED."""
    new_match = scope.matches(event.obj)
    old_match = event.old is not None and scope.matches(event.old)
    if event.type == "DELETED":
        kind = "DELETED" if old_match else None
    elif event.type == "ADDED":
        kind = "ADDED" if new_match else None
    elif new_match:
        kind = "MODIFIED" if old_match else "ADDED"
    else:
        kind = "DELETED" if old_match else None
    return None if kind is None else {"type": kind, "object": event.obj}


def _fault_error(fault: Fault) -> _ApiError:
    headers: dict[str, str] = {}
    details: JSON | None = None
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
        details = {"retryAfterSeconds": fault.retry_after}
    default = {
        429: "Too many requests, please try again later.",
        500: "Internal error occurred: injected by FakeKube.fail_next",
        503: "The server is currently unable to handle the request",
    }.get(fault.status, f"injected by FakeKube.fail_next ({fault.status})")
    message = fault.message if fault.message is not None else default
    return _ApiError(fault.status, message, headers=headers, details=details)
