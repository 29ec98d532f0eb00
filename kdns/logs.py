"""Process logging for kdns and nodecache: ``--log-format text`` (the default) or ``json``.

Both programs call ``configure`` once at startup, so their lines carry the same fields:

* text: ``2026-12-02 07:00:00,123 INFO kdns: message``
* json: one object per line, ``{"ts": 1764658800.123, "time": "2026-12-02T07:00:00.123Z",
  "level": "INFO", "logger": "kdns", "program": "kdns", "msg": "message"}``, plus ``exc`` (the
  formatted traceback) when there is one. ``ts`` is float Unix seconds, as in the query log.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HANDLER_NAME: Final = "kdns.logs"


class JSONFormatter(logging.Formatter):
    """One JSON object per record, the same keys in every program."""

    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "program": self.program,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc"] = record.exc_text
        return json.dumps(fields, ensure_ascii=False)


def configure(level: str, log_format: str, program: str) -> None:
    """Send the root logger's records to stderr in ``log_format`` (text or json). Replaces a
    handler an earlier call installed, and leaves others (pytest's) alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    if log_format == "json":
        handler.setFormatter(JSONFormatter(program))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
