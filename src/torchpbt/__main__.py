"""``python -m torchpbt``: the ``torchpbt`` command line."""

from .ui.cli import main

raise SystemExit(main())
