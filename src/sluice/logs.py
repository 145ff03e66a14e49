"""Logging setup: structlog, readable on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging", "quiet_pool_warnings"]


def configure_logging(level: str = "info", fmt: str | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process.

    ``fmt``: ``console`` or ``json``; by default console on a terminal, JSON when
    the output is a pipe or file (where a program will read it).
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        from sluice.errors import ConfigError

        raise ConfigError(f"SLUICE_LOG_LEVEL {level!r} is not one of debug, info, warning, error")
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    quiet_pool_warnings()


def quiet_pool_warnings() -> None:
    """Keep psycopg's pool to errors only.

    While PostgreSQL is away the pool logs a warning, as raw text, for every attempt it
    makes to reconnect; the store already reports the outage, with its cause, as the
    error of the call that met it.
    """
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
