"""How the native extension ``fastpid._C`` was built, without ever making
``import fastpid`` depend on it.

The extension is imported lazily, on each call, so a missing or broken build
shows up here (``native: False`` plus the import error) instead of as an
ImportError at ``import fastpid``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

from ._caller import caller_level

__all__ = ["build_info", "load_extension", "native_available"]

# The instruction-set macros a -march=native build lists in _C.isa (CMakeLists.txt), and the
# flag /proc/cpuinfo shows for each; macros not named here are not checked.
_CPUINFO_FLAG = {
    "SSE": "sse", "SSE2": "sse2", "SSE3": "pni", "SSSE3": "ssse3", "SSE4_1": "sse4_1", "SSE4_2": "sse4_2",
    "SSE4A": "sse4a", "AVX": "avx", "AVX2": "avx2", "FMA": "fma", "BMI": "bmi1", "BMI2": "bmi2",
    "F16C": "f16c", "LZCNT": "abm", "POPCNT": "popcnt", "MOVBE": "movbe", "GFNI": "gfni", "VAES": "vaes",
    "VPCLMULQDQ": "vpclmulqdq", "SHA": "sha_ni", "ADX": "adx", "AES": "aes", "PCLMUL": "pclmulqdq",
    "AVX512F": "avx512f", "AVX512DQ": "avx512dq", "AVX512CD": "avx512cd", "AVX512BW": "avx512bw",
    "AVX512VL": "avx512vl", "AVX512IFMA": "avx512ifma", "AVX512VBMI": "avx512vbmi",
    "AVX512VBMI2": "avx512_vbmi2", "AVX512VNNI": "avx512_vnni", "AVX512BITALG": "avx512_bitalg",
    "AVX512VPOPCNTDQ": "avx512_vpopcntdq", "AVX512BF16": "avx512_bf16", "AVX512FP16": "avx512_fp16",
    "AVXVNNI": "avx_vnni", "AVX512VP2INTERSECT": "avx512_vp2intersect", "AVXVNNIINT8": "avx_vnni_int8",
}
_warned = False


def missing_instructions(required: Iterable[str], cpu_flags: Iterable[str]) -> list[str]:
    """The macros of ``required`` (e.g. ``"__AVX512F__"``) whose instruction set is not among
    ``cpu_flags`` (the CPU's flags as /proc/cpuinfo names them), as cpuinfo names them."""
    have = set(cpu_flags)
    wanted = (_CPUINFO_FLAG.get(_macro_name(m)) for m in required)
    return sorted({flag for flag in wanted if flag is not None and flag not in have})


def _macro_name(macro: str) -> str:
    """``"__AVX512F__"`` -> ``"AVX512F"``, the key of :data:`_CPUINFO_FLAG`."""
    return macro.strip().strip("_")


def needed_instructions(isa: Path | None) -> list[str] | None:
    """The instruction sets a module built for the macros listed in ``isa`` needs, sorted,
    as /proc/cpuinfo names them; a macro this module has no name for (a newer instruction
    set, which the import check cannot test) as the compiler's macro, e.g. ``"__AVX10_1__"``.
    ``None`` where there is no list."""
    if isa is None:
        return None
    return sorted({_CPUINFO_FLAG.get(_macro_name(m), m.strip()) for m in isa.read_text().split()})


def _cpu_flags() -> list[str] | None:
    """This CPU's flags from /proc/cpuinfo (Linux); ``None`` where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return line.partition(":")[2].split()
    except OSError:
        pass
    return None


def _isa_file() -> Path | None:
    """``_C.isa`` beside the built module (found without importing it), if there is one."""
    spec = importlib.util.find_spec("fastpid._C")
    if spec is None or not spec.origin:
        return None
    isa = Path(spec.origin).with_name("_C.isa")
    return isa if isa.is_file() else None


def unfit_cpu(isa: Path | None, cpu_flags: Iterable[str] | None) -> str:
    """Why a CPU with ``cpu_flags`` cannot run a module built for the instructions listed in
    ``isa`` (those it lacks), or ``""`` (also where either is unknown); checked before the
    import, where a missing instruction stops the process instead of raising."""
    if isa is None or cpu_flags is None:
        return ""
    missing = missing_instructions(isa.read_text().split(), cpu_flags)
    if not missing:
        return ""
    return (f"fastpid._C was compiled for the building machine's CPU (-march=native) and needs "
            f"{', '.join(missing)}, which this CPU lacks (importing it would stop the process); "
            "rebuild it here from the source it was installed from (pip install --no-cache-dir "
            "--force-reinstall <that folder, archive or URL>), or build a portable one with "
            "CMAKE_ARGS=-DFASTPID_NATIVE_ARCH=OFF")


def load_extension():
    """``(fastpid._C, "")`` when the extension imports, else ``(None, why not)``: the import
    error, or the instructions the module needs that this CPU lacks. The first failure
    warns (once): the PyTorch solvers then run in its place, several times slower."""
    if "fastpid._C" not in sys.modules:
        unfit = _unfit_here()
        if unfit:
            return None, _unavailable(unfit)
    try:
        module = importlib.import_module("fastpid._C")
    except Exception as exc:  # ImportError, or a broken shared object (OSError, ...)
        return None, _unavailable(f"{type(exc).__name__}: {exc}")
    _align_threads_after_fork()
    return module, ""


@functools.lru_cache(maxsize=None)  # once a process
def _align_threads_after_fork() -> None:
    """In a forked child, torch's thread count set again to OpenMP's, which the extension's
    fork handler sets to 1 where the forking thread had run a team of the C++ solver
    (csrc/solver_cpu.cpp): MKL keeps the count ``torch.set_num_threads`` gave it, and a child's
    first MKL operation (``torch.log`` of 200,000 entries, a matmul) opened a region of that
    many threads on the pool that cannot serve a child, and waited for good."""
    if hasattr(os, "register_at_fork"):
        import torch

        os.register_at_fork(after_in_child=lambda: torch.set_num_threads(torch.get_num_threads()))


@functools.lru_cache(maxsize=None)
def _unfit_here() -> str:
    """:func:`unfit_cpu` for this machine and the installed module, read once (every solve
    asks, and neither changes within a process)."""
    return unfit_cpu(_isa_file(), _cpu_flags())


def _unavailable(reason: str) -> str:
    global _warned
    if not _warned:
        _warned = True
        # The folder fastpid came from tells a source checkout that shadows an installed
        # package (python run in the checkout) from an install without its extension.
        warnings.warn(f"fastpid's native extension is unavailable ({reason}); the PyTorch solvers run in "
                      "its place, several times slower on the CPU. fastpid was imported from "
                      f"{Path(__file__).parent} (`fastpid info` shows the build)",
                      RuntimeWarning, stacklevel=caller_level())
    return reason


def build_info() -> dict[str, Any]:
    """Describe the native extension.

    Returns
    -------
    dict
        When ``fastpid._C`` imports: ``native=True`` and the fields reported by
        the extension (``version``, ``compiler_id``, ``compiler_version``,
        ``cxx_standard``, ``build_type``, ``cuda_compiled``, ``cuda_searched``,
        ``cuda_compiler_found``, ``cuda_compiler_version``, ``openmp``, ...).
        ``cpu_instructions`` lists every instruction set the module needs (``_C.isa``, as
        /proc/cpuinfo names them; empty for a portable build, ``None`` where unknown).
        Otherwise ``native=False`` and ``error``, the text of the import error.
    """
    ext, error = load_extension()
    if ext is None:
        return {"native": False, "error": error}
    info = dict(ext.build_info())
    info["cpu_instructions"] = needed_instructions(_isa_file())
    info["native"] = True
    return info


def native_available() -> bool:
    """True when the compiled extension ``fastpid._C`` can be imported."""
    return bool(build_info()["native"])
