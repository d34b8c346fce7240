"""Structured logging for the daemon: ``key=value`` lines or JSON lines on stderr.

Callers add fields with ``log.info("job finished", extra={"fields": {"job": job_id}})``; uvicorn's own loggers
are routed through the same formatter so one process writes one format. The audit log (``standby.audit``,
see ``edge.audit``) is written at INFO even when the daemon's level is higher: who did what must not depend on
how chatty the rest of the log is.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from standby.edge.audit import AUDIT_LOGGER

_RESERVED = ("ts", "level", "logger", "msg")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class KeyValueFormatter(logging.Formatter):
    """``ts=… level=info logger=standby.daemon msg="…" key=value``; values with spaces are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        """One line per record; an exception adds an ``error`` field, never a multi-line traceback."""
        pairs: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        pairs.update({k: v for k, v in _fields(record).items() if k not in _RESERVED})
        if record.exc_info and record.exc_info[1] is not None:
            pairs["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return " ".join(f"{key}={_kv(value)}" for key, value in pairs.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as ``KeyValueFormatter``."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialize the record and its fields; unknown types become strings."""
        data: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update({k: v for k, v in _fields(record).items() if k not in _RESERVED})
        if record.exc_info and record.exc_info[1] is not None:
            data["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _kv(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


def setup_logging(level: str, fmt: str, *, access_log: bool = False, stream: TextIO | None = None) -> None:
    """Route the root logger (and uvicorn's) to one stderr handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if access_log else logging.WARNING)
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)
