"""The operator console: a web UI served by ``sluice serve`` and ``sluice run`` at ``/``
(the API stays under ``/v1``). Server-rendered pages with htmx; every asset ships in
this package. Acts go through ``sluice.ops``, as the CLI's and the API's do."""

from __future__ import annotations

from sluice.console.web import install

__all__ = ["install"]
