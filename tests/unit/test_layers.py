"""What importing a module loads: the layers of the import contracts, checked at run time.

lint-imports proves the static import graph; this proves what a fresh interpreter actually has
in ``sys.modules`` after one import, so a lazy import that became eager is caught too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# (module imported, modules it must not load)
CASES = [
    ("nodecache.handler", ("kdns.table", "kdns.synth", "kdns.state", "kdns.serve.protocol")),
    ("kdns.dns", ("kdns.wire", "kdns.names", "kdns.resolver", "kdns.serve", "kdns.config")),
    ("kdns.resolver.core", ("kdns.wire", "kdns.names", "kdns.table", "kdns.serve")),
    ("kdns.resolver.front", ("kdns.wire", "kdns.names", "kdns.table", "kdns.serve")),
]


def _loaded(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(("module", "absent"), CASES, ids=[case[0] for case in CASES])
def test_import_does_not_load(module: str, absent: tuple[str, ...]) -> None:
    loaded = _loaded(module)
    assert module in loaded
    assert not loaded & set(absent), f"{module} loads {sorted(loaded & set(absent))}"
