"""How the native extension ``fastpid._C`` was built, without ever making
``import fastpid`` depend on it.

The extension is imported lazily, on each call, so a missing or broken build
shows up here (``native: False`` plus the import error) instead of as an
ImportError at ``import fastpid``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_info", "load_extension", "native_available"]


def load_extension():
    """``(fastpid._C, "")`` when the extension imports, else ``(None, the import error)``."""
    try:
        return importlib.import_module("fastpid._C"), ""
    except Exception as exc:  # ImportError, or a broken shared object (OSError, ...)
        return None, f"{type(exc).__name__}: {exc}"


def build_info() -> dict[str, Any]:
    """Describe the native extension.

    Returns
    -------
    dict
        When ``fastpid._C`` imports: ``native=True`` and the fields reported by
        the extension (``version``, ``compiler_id``, ``compiler_version``,
        ``cxx_standard``, ``build_type``, ``cuda_compiled``, ``cuda_searched``,
        ``cuda_compiler_found``, ``cuda_compiler_version``, ``openmp``, ...).
        Otherwise ``native=False`` and ``error``, the text of the import error.
    """
    ext, error = load_extension()
    if ext is None:
        return {"native": False, "error": error}
    info = dict(ext.build_info())
    info["native"] = True
    return info


def native_available() -> bool:
    """True when the compiled extension ``fastpid._C`` can be imported."""
    return bool(build_info()["native"])
