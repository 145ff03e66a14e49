"""The files around the code say what the package metadata says: the LICENSE is the
license ``pyproject.toml`` names, and the README states the Python versions it allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license__is_the_one_pyproject_names_with_the_projects_copyright() -> None:
    text = (ROOT / "LICENSE").read_text()

    assert PROJECT["license"] == {"text": "Apache-2.0"}
    assert re.search(r"Apache License\s+Version 2\.0, January 2004", text)
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Copyright 2026 The Sluice authors" in text


def test_readme__states_the_python_versions_requires_python_allows() -> None:
    readme = (ROOT / "README.md").read_text()
    low, high = re.fullmatch(r">=3\.(\d+),<3\.(\d+)", PROJECT["requires-python"]).groups()  # type: ignore[union-attr]
    allowed = [f"3.{minor}" for minor in range(int(low), int(high))]

    stated = re.search(r"Python (3\.\d+)(?: or| and|,) (3\.\d+)", readme)

    assert stated, "the README names no supported Python versions"
    assert list(stated.groups()) == allowed
    assert f'`requires-python = "{PROJECT["requires-python"]}"`' in readme
