"""The garbage collector in a long-running Sluice process (worker, server, simulator).

Python's full collection walks every object the process holds: the modules, classes,
routes and models loaded at start-up are most of them, and they never become garbage.
In a ``sluice serve`` at 2,000 webhooks a second, each full collection stopped the
event loop for 45 to 80 ms, long enough for 100 or more requests to queue behind it.
``settle`` is called once a process has started: start-up garbage is collected, and
what is left is moved where collections no longer look (``gc.freeze``). A full
collection then walks only what was made since, and takes well under a millisecond.

Only entry points call it (``sluice worker``, ``serve``, ``run``, ``simulator``): in a
process that embeds Sluice (an application, a test run) the heap is not Sluice's to
freeze.
"""

from __future__ import annotations

import gc

__all__ = ["settle"]


def settle() -> None:
    """Collect what start-up left behind, then freeze the rest out of the collector's
    sight. Safe to call more than once (each call freezes what was made since)."""
    gc.collect()
    gc.freeze()
