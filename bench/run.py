"""Entry point for ``python bench/run.py`` (same as ``python -m bench``)."""

import sys
from pathlib import Path

# When run as a script, sys.path[0] is bench/ itself; the package lives one level up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import main

if __name__ == "__main__":
    raise SystemExit(main())
