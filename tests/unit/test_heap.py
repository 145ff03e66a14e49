"""``sluice.heap.settle``: start-up garbage collected, the rest frozen out of the
collector's sight; called by the server's app factory. Each case runs in its own
interpreter (freezing the test run's heap is not the test's to do)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_settle__collects_cycles_left_by_start_up_then_freezes_the_rest() -> None:
    out = run(
        """
        import gc, weakref
        from sluice import heap

        class Node: pass
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle only the collector frees
        gone = weakref.ref(a)
        kept = Node()
        del a, b
        gc.disable()  # nothing collects before settle does
        heap.settle()
        print(gone() is None, gc.get_freeze_count() > 0, gc.is_tracked(kept))
        """
    )
    assert out == "True True True"


def test_the_server_factory_settles_its_process(tmp_path: Path) -> None:
    out = run(
        """
        import gc
        from sluice.api.app import app_from_env

        before = gc.get_freeze_count()
        app_from_env()
        print(before == 0, gc.get_freeze_count() > 1000)
        """,
        SLUICE_DATABASE_URL=f"sqlite:///{tmp_path / 'sluice.db'}",
    )
    assert out == "True True"
