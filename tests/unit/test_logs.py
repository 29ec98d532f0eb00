"""kdns.logs: the JSON log line both programs write with --log-format json."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from kdns.logs import JSONFormatter

KEYS = {"ts", "time", "level", "logger", "program", "msg"}


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("kdns.serve", logging.WARNING, __file__, 1, message, args, exc_info)


CASES = [
    pytest.param(record("serving on %s:%d", "127.0.0.1", 53), "serving on 127.0.0.1:53", id="args"),
    pytest.param(record('quote " and \n newline'), 'quote " and \n newline', id="escaping"),
    pytest.param(record("ünïcode"), "ünïcode", id="unicode"),
    pytest.param(record("failed", exc=True), "failed", id="exception"),
]


@pytest.mark.parametrize(("entry", "message"), CASES)
def test_json_line_has_the_same_fields_everywhere(entry: logging.LogRecord, message: str) -> None:
    line = JSONFormatter("nodecache").format(entry)
    assert "\n" not in line
    fields = json.loads(line)
    assert set(fields) >= KEYS
    assert set(fields) - KEYS <= {"exc"}
    assert fields["msg"] == message
    assert fields["level"] == "WARNING"
    assert fields["logger"] == "kdns.serve"
    assert fields["program"] == "nodecache"
    assert fields["ts"] == pytest.approx(entry.created)
    assert fields["time"].endswith("Z")
    if entry.exc_info:
        assert "ValueError: boom" in fields["exc"]
