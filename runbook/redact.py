"""Secret hygiene: every log record has configured secret values masked before any handler sees it.

Installed as a log-record factory, so it covers Prefect's API log handler, the console and
anything else. Secrets are registered from settings and from every block that is resolved.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

MASK = "********"
_MIN_LENGTH = 6  # shorter values would mask ordinary words
_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def register(value: str | SecretStr | None) -> None:
    """Mask `value` (and, for a URL, its password) in every log record from now on."""
    if value is None:
        return
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    found = {raw}
    try:
        password = urlsplit(raw).password
    except ValueError:
        password = None
    if password:
        found |= {password, unquote(password)}
    with _lock:
        _secrets.update(v for v in found if len(v) >= _MIN_LENGTH)


def register_model(model: BaseModel) -> None:
    """Register every `SecretStr` field (also inside dicts) of a settings object or block."""
    for name in type(model).model_fields:
        value: Any = getattr(model, name, None)
        if isinstance(value, SecretStr):
            register(value)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, SecretStr):
                    register(item)


def mask(text: str) -> str:
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def install() -> None:
    """Wrap the log-record factory once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _secrets:
            try:
                message = record.getMessage()
            except Exception:  # a malformed log call: leave it to logging to report
                return record
            masked = mask(message)
            if masked != message:
                record.msg, record.args = masked, None
            if record.exc_info:  # tracebacks can carry URLs and tokens too
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_text = mask(text)
        return record

    logging.setLogRecordFactory(factory)
