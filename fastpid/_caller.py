"""Where a warning should point: the user's line, however deep in fastpid it is raised."""

from __future__ import annotations

import os
import sys


def caller_level() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the function that calls this one: the first frame
    outside fastpid (its integrations too, wherever installed) and torch, the caller's code,
    whatever wrappers lie between (an integration called by another, a module's ``__call__``)."""
    packages = [sys.modules[name] for name in ("fastpid", "fastpid.integrations", "torch") if name in sys.modules]
    inside = tuple(os.path.join(os.path.dirname(m.__file__), "") for m in packages
                   if getattr(m, "__file__", None))
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        level, frame = level + 1, frame.f_back
    return level
