"""JSON log lines carry time, level, logger, message and kopf's object reference."""

from __future__ import annotations

import json
import logging

from lorapack.logfmt import JsonFormatter


def test_json_lines() -> None:
    record = logging.LogRecord(
        "kopf.objects", logging.WARNING, __file__, 1, "Pool %s stalled", ("p",), None
    )
    record.k8s_ref = {"kind": "BaseModelPool", "namespace": "ml", "name": "p", "uid": "x"}
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING"
    assert line["logger"] == "kopf.objects"
    assert line["message"] == "Pool p stalled"
    assert line["object"] == {"kind": "BaseModelPool", "namespace": "ml", "name": "p"}
    assert line["time"].endswith("+00:00")
