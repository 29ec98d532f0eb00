"""Suite-wide fixtures: what one test leaves behind must not reach the next."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from kdns import logs


@pytest.fixture(autouse=True)
def _no_cli_log_handler_left_behind() -> Iterator[None]:
    """A test that runs a CLI in-process installs kdns's stderr handler on the root logger, bound
    to that test's captured stderr. pytest closes that stream afterwards, and every later record
    would print a "--- Logging error ---" traceback instead of itself."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if handler.get_name() == logs.HANDLER_NAME:
            root.removeHandler(handler)
    root.setLevel(level)
