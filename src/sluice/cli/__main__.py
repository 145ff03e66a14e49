"""``python -m sluice.cli``: the same as the ``sluice`` script."""

from __future__ import annotations

from sluice.cli import main

if __name__ == "__main__":
    main()
