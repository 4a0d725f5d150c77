"""The operator console: server-rendered pages under /console of the API process (docs/console.md)."""

from consumer.console.app import create_console

__all__ = ["create_console"]
