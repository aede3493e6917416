"""JSON log lines on stderr, credentials redacted, and a rate limit for messages that a
bad producer could flood."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Final

from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

REDACTED: Final = "[redacted]"
#: Credentials a line may carry: a token in a query (``access_token=``, as uvicorn's
#: per-connection line "WebSocket /ws?access_token=..." logs it), an Authorization
#: value, a ``bearer.<token>`` subprotocol, and anything shaped like a JWT wherever it
#: appears (an exception's text, a header dump).
_CREDENTIALS: Final = (
    (re.compile(r"(?i)(access_token=)[^&\s\"'#\\]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer[ .]|basic )[^\s\"',;\\]+"), r"\1" + REDACTED),
    (re.compile(r"\beyJ[\w-]*\.[\w-]+\.[\w-]*"), REDACTED),
)


def redact(text: str) -> str:
    """``text`` with every credential it carries replaced by ``[redacted]``."""
    for pattern, replacement in _CREDENTIALS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(_LibraryJsonFormatter):
    """One JSON object per line (python-json-logger): ``ts``, ``level``, ``logger``,
    ``msg``, any ``extra`` fields, and ``exc`` with the traceback."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={
                "levelname": "level",
                "name": "logger",
                "message": "msg",
                "exc_info": "exc",
            },
            json_default=str,
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["ts"] = round(record.created, 3)
        super().add_fields(log_data, record, message_dict)
        log_data["level"] = record.levelname.lower()

    def format(self, record: logging.LogRecord) -> str:
        # The whole line, so no field (message, extra, traceback) can carry a token out.
        return redact(super().format(record))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RateLimitedLog:
    """Lets through at most ``burst`` messages per ``period`` seconds per key and counts
    the rest, reporting how many were suppressed with the next message let through."""

    def __init__(self, logger: logging.Logger, burst: int = 5, period: float = 10.0) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._windows: dict[str, tuple[float, int, int]] = {}

    def warning(self, key: str, msg: str, **fields: Any) -> None:
        now = time.monotonic()
        start, sent, suppressed = self._windows.get(key, (now, 0, 0))
        if now - start >= self._period:
            start, sent = now, 0
        if sent < self._burst:
            if suppressed:
                fields["suppressed"] = suppressed
            self._logger.warning(msg, extra=fields)
            self._windows[key] = (start, sent + 1, 0)
        else:
            self._windows[key] = (start, sent, suppressed + 1)
