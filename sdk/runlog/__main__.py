"""``python -m runlog``: the ``runlog`` command (see ``runlog._cli``)."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())

__all__: list[str] = []
