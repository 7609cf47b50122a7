"""The installed package carries a working native extension ``fastpid._C``.

These tests fail (rather than skip) when the extension did not build: CI uses them
to prove that the CMake/pybind11 build works on a clean machine.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest


def test_native_module_imports():
    ext = importlib.import_module("fastpid._C")
    path = Path(ext.__file__)
    assert path.name.startswith("_C.")
    assert any(path.name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)
    assert path.parent.name == "fastpid"


def test_native_build_info_is_sane():
    import fastpid._C as ext

    info = ext.build_info()
    assert isinstance(info, dict)
    assert info["native"] is True
    assert info["version"] == version("fastpid") == ext.__version__
    assert isinstance(info["compiler_id"], str) and info["compiler_id"]
    assert isinstance(info["compiler_version"], str) and info["compiler_version"]
    assert info["cxx_standard"] >= 17
    assert info["build_type"]
    # The CUDA kernels are compiled exactly when a CUDA compiler was searched for and found.
    assert info["cuda_compiled"] is (info["cuda_searched"] and info["cuda_compiler_found"])
    assert isinstance(info["cuda_searched"], bool)
    assert isinstance(info["cuda_compiler_found"], bool)
    if not info["cuda_compiler_found"]:
        assert info["cuda_compiler_version"] == ""
    if not info["cuda_searched"]:
        assert info["cuda_compiler_found"] is False
    # The CUDA architectures compiled for, and whether the CPU code is for this CPU only
    # (-march=native by default; the instructions it needs: the test below).
    assert (info["cuda_architectures"] != "") is info["cuda_compiled"]
    assert isinstance(info["march_native"], bool)
    assert isinstance(info["openmp"], bool)
    if info["openmp"]:
        assert info["openmp_version"] >= 200000 and info["openmp_max_threads"] >= 1
    else:
        assert info["openmp_version"] is None


def test_python_wrapper_reports_native():
    from fastpid._build_info import _isa_file, build_info, native_available, needed_instructions

    import fastpid._C as ext

    info = build_info()
    assert native_available() is True
    assert info == {**ext.build_info(), "cpu_instructions": needed_instructions(_isa_file()), "native": True}


def test_wrapper_without_extension(monkeypatch):
    from fastpid._build_info import build_info, native_available

    monkeypatch.setitem(sys.modules, "fastpid._C", None)  # makes `import fastpid._C` fail
    info = build_info()
    assert info["native"] is False
    assert "ImportError" in info["error"] or "ModuleNotFoundError" in info["error"]
    assert native_available() is False


def test_instructions_the_cpu_lacks_are_named_in_cpuinfo_terms(tmp_path):
    from fastpid._build_info import missing_instructions, unfit_cpu

    required = ["__AVX512F__", "__AVX2__", "__SSE3__", "__BMI__", "__SOMETHING_NEW__"]
    assert missing_instructions(required, ["avx2", "pni"]) == ["avx512f", "bmi1"]
    assert missing_instructions(required, ["avx512f", "avx2", "pni", "bmi1"]) == []
    isa = tmp_path / "_C.isa"
    isa.write_text("__AVX512F__\n__AVX2__\n")
    assert "needs avx512f, which this CPU lacks" in unfit_cpu(isa, ["avx2", "sse2"])
    assert unfit_cpu(isa, ["avx512f", "avx2"]) == "" and unfit_cpu(None, []) == "" and unfit_cpu(isa, None) == ""


def test_build_info_lists_every_instruction_set_the_module_needs(tmp_path):
    """cpu_instructions listed five sets compiled into build_info.cpp (avx512f, avx2, fma,
    avx, sse4.2) while the import check asks for every one in _C.isa (34 on an AVX-512
    build): a CPU with the five listed was still refused. It is now _C.isa's list in
    /proc/cpuinfo's names, so a CPU whose flags hold it passes the import check."""
    import platform

    from fastpid import _build_info as bi
    info = bi.build_info()
    isa = bi._isa_file()
    assert isa is not None, "the build writes _C.isa beside the module"
    listed = info["cpu_instructions"]
    assert listed == sorted(set(listed))
    assert bi.missing_instructions(isa.read_text().split(), listed) == []
    assert len(listed) == len({m.strip("_") for m in isa.read_text().split()})
    if info["march_native"] and platform.machine() == "x86_64":
        assert "sse4_2" in listed      # every x86-64 CPU of the last 15 years
    assert bi.needed_instructions(None) is None
    other = tmp_path / "_C.isa"   # a set this module has no cpuinfo name for keeps its macro
    other.write_text("__AVX2__\n__AVX512VP2INTERSECT__\n__AVX10_1__\n")
    assert bi.needed_instructions(other) == ["__AVX10_1__", "avx2", "avx512_vp2intersect"]


def test_a_module_built_for_instructions_this_cpu_lacks_is_not_imported():
    """A -march=native module on a CPU without one of its instructions stopped the process
    at import (SIGILL), before the fallback to the PyTorch solvers could say why. The
    instructions are checked first (here against a CPU pretended to have none)."""
    import fastpid._C as ext

    isa = Path(ext.__file__).with_name("_C.isa")
    assert isa.is_file()                                   # installed beside the module
    native = ext.build_info()["march_native"]
    assert bool(isa.read_text().split()) is native         # listed exactly for -march=native builds
    code = (
        "import warnings, numpy as np\n"
        "import fastpid._build_info as b\n"
        "b._cpu_flags = lambda: []\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    ext, why = b.load_extension()\n"
        "    b.load_extension()\n"
        "import sys, fastpid\n"
        "r = fastpid.pid(np.full((2, 2, 2), 0.125))\n"
        "print(ext is None, 'fastpid._C' in sys.modules, len(w), why[:40], r.backend)\n"
    )
    out = _python(code)
    if native:   # refused unimported, one warning, the PyTorch solver in its place
        assert out.split()[:3] == ["True", "False", "1"] and "compiled for the building" in out
        assert out.split()[-1] == "torch"
    else:        # a portable module needs nothing the check knows of
        assert out.split()[:3] == ["False", "True", "0"]


def test_the_fallback_warning_points_at_the_callers_line():
    """The warning that the extension is unavailable was attributed to a line inside fastpid
    (a fixed stacklevel, reached through calls of different depths)."""
    import fastpid._C as ext

    if not Path(ext.__file__).with_name("_C.isa").read_text().split():
        pytest.skip("a portable module: no instruction it needs can be faked missing")
    code = (
        "import warnings, numpy as np, fastpid\n"
        "import fastpid._build_info as b\n"
        "b._cpu_flags = lambda: []\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    fastpid.pid(np.full((2, 2, 2), 0.125))\n"
        "    b._warned = False\n"
        "    b.build_info()\n"
        "print([(x.filename, x.lineno) for x in w])\n"
    )
    assert _python(code).strip() == "[('<string>', 6), ('<string>', 8)]"


def test_the_fallback_warning_names_the_folder_fastpid_was_imported_from():
    """Run in a source checkout after a non-editable install, python imports the checkout's
    fastpid (which has no extension): the warning said only "No module named 'fastpid._C'"."""
    code = (
        "import sys, warnings; sys.modules['fastpid._C'] = None\n"
        "import fastpid, fastpid._build_info as b\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    b.load_extension()\n"
        "print(str(w[0].message))\n"
    )
    import fastpid
    assert f"fastpid was imported from {Path(fastpid.__file__).parent} " in _python(code)


def test_import_fastpid_does_not_need_the_extension():
    code = (
        "import sys; sys.modules['fastpid._C'] = None\n"
        "import fastpid\n"
        "from fastpid._build_info import build_info\n"
        "assert build_info()['native'] is False\n"
        "print('ok')\n"
    )
    assert _python(code).strip() == "ok"


def _python(code: str) -> str:
    """The output of ``code`` run in a fresh interpreter, which must succeed."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_integrations_subpackage_is_installed():
    integrations = importlib.import_module("fastpid.integrations")
    assert integrations.__name__ == "fastpid.integrations"
    for name in ("PIDProbe", "ECSAsyncController", "SynIBLoss"):
        assert name in integrations.__all__ and callable(getattr(integrations, name))
    assert all(hasattr(integrations, name) for name in integrations.__all__)


@pytest.mark.slow
def test_build_with_cuda_switched_off(tmp_path):
    """FASTPID_CUDA=0 builds the CPU module alone, with the same Python interface; with
    FASTPID_NATIVE_ARCH=OFF (for wheels to share) build_info() says so."""
    import os
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "FASTPID_CUDA": "0", "CMAKE_ARGS": "-DFASTPID_NATIVE_ARCH=OFF"}
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(repo)],
                          capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel, = tmp_path.glob("fastpid-*.whl")
    with zipfile.ZipFile(wheel) as z:
        so, = [n for n in z.namelist() if n.startswith("fastpid/_C.")
               and any(n.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)]
        z.extract(so, tmp_path)
        # The instructions a portable module needs: none listed, so every CPU may import it.
        assert z.read("fastpid/_C.isa").split() == []
        z.extract("fastpid/_C.isa", tmp_path)
    from fastpid._build_info import needed_instructions
    assert needed_instructions(tmp_path / "fastpid" / "_C.isa") == []
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('_C', {str(tmp_path / so)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "info = m.build_info()\n"
        "assert info['cuda_compiled'] is False and info['cuda_searched'] is False, info\n"
        "assert info['cuda_architectures'] == '' and info['march_native'] is False, info\n"
        "count, why = m.cuda_device_count()\n"
        "assert count == 0 and 'without CUDA' in why, why\n"
        "assert hasattr(m, 'emulate') and hasattr(m, 'solve')\n"
        "print('ok')\n"
    )
    assert "ok" in _python(code)
