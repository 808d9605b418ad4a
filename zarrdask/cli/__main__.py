"""``python -m zarrdask.cli``."""

from . import main

raise SystemExit(main())
