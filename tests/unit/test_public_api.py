"""The public surface is what ``sluice.__all__`` claims, no more and no less."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import types

import sluice


def test_all__is_sorted_without_duplicates() -> None:
    assert list(sluice.__all__) == sorted(set(sluice.__all__))


def test_all__every_name_exists() -> None:
    missing = [name for name in sluice.__all__ if not hasattr(sluice, name)]
    assert missing == []


def public_names() -> set[str]:
    """Names a user can reach as ``sluice.X``, other than submodules and compiler flags."""
    return {
        name
        for name, value in vars(sluice).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # the `from __future__ import annotations` flag
    }


def test_all__lists_every_public_name_of_the_package() -> None:
    assert public_names() == set(sluice.__all__) - {"__version__"}


def test_all__exports_the_status_a_message_carries() -> None:
    # Message.status is a Status: a user comparing it needs the type from the top level.
    assert "Status" in sluice.__all__
    assert sluice.Status("queued") is sluice.Status.QUEUED


def test_all__star_import_works_in_a_fresh_interpreter() -> None:
    # A fresh process, so an import cycle hidden by modules other tests loaded shows up.
    code = (
        "from sluice import *\n"
        "import sluice\n"
        "names = dir()\n"
        "print(sorted(n for n in sluice.__all__ if n not in names))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_public_names__come_from_sluice_and_are_documented() -> None:
    for name in sluice.__all__:
        value = getattr(sluice, name)
        if isinstance(value, str):
            continue
        assert value.__module__.startswith("sluice."), name
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_version__is_a_string_matching_the_installed_distribution() -> None:
    assert isinstance(sluice.__version__, str)
    assert sluice.__version__ == importlib.metadata.version("sluice")
