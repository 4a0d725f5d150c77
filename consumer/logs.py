"""structlog configured once, as JSON, with personal data masked before anything is rendered."""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from consumer.config import Settings

_PERSONAL_KEYS = frozenset({"email", "phone", "phone_number", "phonenumber", "emails", "phonenumbers"})
_EMAIL = re.compile(r"[^\s@\"'<>,;:]+@[^\s@\"'<>,;:]+")
# Six or more digits, maybe with separators, not glued to other word characters (ids, uuids, offsets),
# and not a uuid that happens to hold only decimal digits.
_PHONE = re.compile(r"(?<![\w\-])(?!\d{8}(?:-\d{4}){3}-\d{12}(?![\w\-]))\+?\d[\d\s().\-]{4,}\d(?![\w\-])")


# Digit runs that are not phone numbers: IPv4 addresses and calendar dates stay readable.
_NOT_PHONE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}|\d{4}-\d{2}-\d{2}")


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group()
    if _NOT_PHONE.fullmatch(text) or sum(c.isdigit() for c in text) < 6:
        return text
    return mask(text)


def mask(value: str) -> str:
    """A stable, non-reversible token for a personal value: equal inputs give equal tokens."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def scrub(value: object) -> object:
    """Mask every email address and phone-like digit run inside `value`, recursively."""
    if isinstance(value, str):
        return _PHONE.sub(_mask_phone, _EMAIL.sub(lambda m: mask(m.group()), value))
    if isinstance(value, Mapping):
        return {k: _mask_field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Renderers print any other object (an exception, a dataclass) by its repr, personal data included.
    return scrub(repr(value))


def _mask_field(key: str, value: object) -> object:
    if key.lower() in _PERSONAL_KEYS and value is not None:
        if isinstance(value, list | tuple):
            return [mask(str(v)) for v in value]
        return mask(str(value))
    return scrub(value)


def mask_personal_data(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no raw email or phone number ever reaches a log line."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _mask_field(key, value)
    return event_dict


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever `sys.stderr` is when a record is emitted. A handler holding the stream it was
    made with breaks when that stream is swapped and closed (pytest's capture): a late record, from an
    atexit hook say, then ends in "Logging error ... I/O operation on closed file"."""

    _chosen: Any = None

    @property
    def stream(self) -> Any:
        return self._chosen or sys.stderr

    @stream.setter
    def stream(self, stream: Any) -> None:
        # StreamHandler's constructor sets today's sys.stderr: that means "follow sys.stderr".
        self._chosen = None if stream is sys.stderr else stream


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelName(settings.log_level)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_personal_data,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    # Route the standard library's loggers (uvicorn, psycopg) through the same pipeline.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
