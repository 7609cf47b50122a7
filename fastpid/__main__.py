"""``python -m fastpid``: the command line of :mod:`fastpid.cli` (where the ``fastpid`` script
is not on the PATH)."""
from .cli import main

raise SystemExit(main())
