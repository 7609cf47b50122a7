"""``python -m fastpid``: the command line of :mod:`fastpid.cli` (where the ``fastpid`` script
is not on the PATH)."""
from .cli import main

if __name__ == "__main__":  # not on import (e.g. by pydoc or documentation tools)
    raise SystemExit(main())
