"""`fastpid demo` / `fastpid info` / `fastpid --version`.

Expected values are textbook BROJA decompositions, in bits:
XOR S = 1; AND/OR R = h(1/4) - 1/2, S = 1/2; COPY (Y = (X1, X2)) U1 = U2 = 1;
RDN (X1 = X2 = Y) R = 1; UNQ (Y = X1) U1 = 1; SUM R = 1/2, S = 1; RDNXOR R = S = 1.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from importlib.metadata import entry_points, version

import pytest

from fastpid.cli import main
from fastpid.demo import format_digits

TERMS = ("redundancy", "unique1", "unique2", "synergy")
AND_R = 1.5 - 0.75 * math.log2(3.0)

KNOWN_BITS = {
    "XOR": (0.0, 0.0, 0.0, 1.0),
    "AND": (AND_R, 0.0, 0.0, 0.5),
    "OR": (AND_R, 0.0, 0.0, 0.5),
    "COPY": (0.0, 1.0, 1.0, 0.0),
    "RDN": (1.0, 0.0, 0.0, 0.0),
    "UNQ": (0.0, 1.0, 0.0, 0.0),
    "SUM": (0.5, 0.0, 0.0, 1.0),
    "RDNXOR": (1.0, 0.0, 0.0, 1.0),
}
# Default exact tolerance is 1e-8 nats = 1.44e-8 bits; leave room for float64 round-off.
GAP_BITS = 1e-8 / math.log(2) + 1e-12


def _json_out(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def gates_json():
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["demo", "--json", "--no-data"]) == 0
    return {row["name"]: row for row in json.loads(buf.getvalue())["gates"]}


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastpid {version('fastpid')}"
    assert main(["--version", "demo"]) == 0                  # the version only, as argparse's action
    assert capsys.readouterr().out.strip() == f"fastpid {version('fastpid')}"


def test_version_to_a_full_disk_or_closed_stdout_fails(monkeypatch, capsys):
    """argparse's version action swallowed the write error and exited 0; with stdout closed
    (``>&-``) every command printed nothing and exited 0."""
    monkeypatch.setattr(sys, "stdout", _Stdout(error=OSError(28, "No space left on device")))
    assert main(["--version"]) == 1
    assert capsys.readouterr().err == "fastpid --version: [Errno 28] No space left on device\n"
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["info"]) == 1
    assert "no standard output" in capsys.readouterr().err


def test_an_option_before_the_command_is_pointed_after_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--json", "demo"])
    assert exc.value.code == 2
    assert "options go after the command: fastpid demo --json" in capsys.readouterr().err


@pytest.mark.parametrize("argv, hint", [
    (["--no-data", "info"], None),                        # info has no --no-data: no command to suggest
    (["--bogus", "demo"], None),
    (["--json", "info", "--json"], "(options go after the command)"),   # already after it: no repeat
])
def test_the_hint_suggests_only_options_the_command_takes(capsys, argv, hint):
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(hint) if hint else "options go after" not in err


def test_info_does_not_warn_that_the_extension_it_reports_is_unavailable():
    """Without the native extension, `fastpid info` warned "(`fastpid info` shows the build)"
    on stderr beside the build it printed."""
    code = ("import sys; sys.modules['fastpid._C'] = None; from fastpid.cli import main; "
            "sys.exit(main(['info']))")
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "native                 False" in proc.stdout


def test_demo_sh_keeps_pip_off_stdout(tmp_path):
    """pip's log went to stdout ahead of the JSON of `scripts/demo.sh --json`."""
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\nif [ "$1 $2" = "-m pip" ]; then echo "Requirement already satisfied"; '
                    f'exit 0; fi\nexec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["bash", str(root / "scripts" / "demo.sh"), "--json", "--no-data"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHON": str(fake)})
    assert proc.returncode == 0, proc.stderr
    assert {r["name"] for r in json.loads(proc.stdout)["gates"]} == set(KNOWN_BITS)
    assert "Requirement already satisfied" in proc.stderr


def test_demo_times_never_print_in_exponent_notation():
    from fastpid.demo import _time_text

    assert _time_text({"seconds": 0.123, "seconds_range": [0.1, 0.25]}) == "123 ms (range 100-250)"
    assert _time_text({"seconds": 0.00123, "seconds_range": [0.0011, 0.0093]}) == "1.2 ms (range 1.1-9.3)"
    assert _time_text({"seconds": 0.08, "seconds_range": [0.0751, 0.4]}, "s") == "0.080 s (range 0.075-0.40)"
    assert _time_text({"seconds": 0.00996, "seconds_range": [0.000999, 0.0999]}) == "10 ms (range 1.0-100)"


def test_importing_dunder_main_runs_nothing():
    done = subprocess.run([sys.executable, "-c", "import fastpid.__main__"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout == "" and "usage" not in done.stderr


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_a_command_given_a_wrong_option_shows_its_own_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastpid demo [-h] [--json] [--no-data]" in err and "unrecognized arguments: --bogus" in err
    assert main([]) == 2 and "a command is required" in capsys.readouterr().err


class _Stdout:
    """A text stdout in ``encoding`` whose writes raise ``error`` when one is given."""

    def __init__(self, encoding="utf-8", error=None):
        import io

        self.raw, self.error = io.BytesIO(), error
        self.text = io.TextIOWrapper(self.raw, encoding=encoding)

    def write(self, s):
        if self.error:
            raise self.error
        return self.text.write(s)

    def flush(self):
        self.text.flush()

    def reconfigure(self, **kw):
        self.text.reconfigure(**kw)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(("argv", "unbuffered"), [(["--help"], "1"), (["info", "--help"], "")])
def test_help_to_a_full_disk_fails_with_one_line(argv, unbuffered):
    """Help went through argparse outside main()'s handling: to a full disk it exited 0 with
    nothing written (unbuffered stdout: argparse dropped the error), and a failed write
    otherwise ended in "Exception ignored ..." and exit 120 from the interpreter's own flush."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "fastpid", *argv], stdout=full, stderr=subprocess.PIPE,
                             text=True, env=env, timeout=120)
    assert run.returncode == 1
    assert run.stderr == "fastpid --help: [Errno 28] No space left on device\n"


def test_help_with_stdout_closed_or_a_closed_pipe_and_usage_errors_with_stderr_failing(monkeypatch, capsys):
    """Help with stdout closed (``>&-``) raised AttributeError on its flush, a closed pipe was
    reported as an error, and a usage error whose stderr failed exited 1 instead of 2."""
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "usage: fastpid" in capsys.readouterr().err  # argparse's fallback
    monkeypatch.setattr(sys, "stdout", _Stdout(error=BrokenPipeError(32, "Broken pipe")))
    assert main(["--help"]) == 1
    assert capsys.readouterr().err == ""  # a reader that left: nothing to report

    class Full:
        def write(self, s):
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(sys, "stderr", Full())
    with pytest.raises(SystemExit) as stop:
        main(["bogus"])
    assert stop.value.code == 2


def test_output_problems_end_the_command_with_one_line(monkeypatch, capsys):
    """An em dash of the estimate table on a latin-1 stdout had stopped the demo halfway
    (UnicodeEncodeError); a full disk and Ctrl-C gave tracebacks."""
    import fastpid.demo

    monkeypatch.setattr(fastpid.demo, "run", lambda **kw: print("p \u2014 1.0"))
    out = _Stdout("latin-1")
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["demo"]) == 0
    out.flush()
    assert out.raw.getvalue() == b"p ? 1.0\n"

    monkeypatch.setattr(sys, "stdout", _Stdout(error=OSError(28, "No space left on device")))
    assert main(["info"]) == 1
    assert capsys.readouterr().err == "fastpid info: [Errno 28] No space left on device\n"

    def interrupted(**kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(fastpid.demo, "run", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "fastpid demo: interrupted\n"


def test_console_script_is_registered():
    eps = entry_points(group="console_scripts")
    assert any(ep.name == "fastpid" and ep.value == "fastpid.cli:main" for ep in eps)


@pytest.mark.parametrize("name", sorted(KNOWN_BITS))
def test_demo_gate_matches_theory(gates_json, name):
    row = gates_json[name]
    assert row["converged"] is True
    assert 0.0 <= row["gap"] <= GAP_BITS
    for term, want in zip(TERMS, KNOWN_BITS[name]):
        # The certificate bounds every term's error.
        assert abs(row[term] - want) <= row["gap"] + 1e-10, (name, term, row[term], want)
    assert row["redundancy"] + row["unique1"] + row["unique2"] + row["synergy"] == pytest.approx(row["mi"], abs=1e-10)
    assert row["redundancy"] + row["unique1"] == pytest.approx(row["mi1"], abs=1e-10)
    assert row["redundancy"] + row["unique2"] == pytest.approx(row["mi2"], abs=1e-10)


def test_demo_lists_every_gate(gates_json):
    assert set(KNOWN_BITS) <= set(gates_json)
    for row in gates_json.values():
        expected = row["expected_bits"]
        if expected:
            for term in TERMS:
                assert abs(row[term] - expected[term]) <= row["gap"] + 1e-10


def test_demo_table_text(capsys):
    assert main(["demo", "--no-data"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("gate"))
    assert header.split()[:8] == ["gate", "shape", "R", "U1", "U2", "S", "I(X1X2;Y)", "gap"]

    def cells(name):
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        return [float(x) for x in line.split()[2:7]]  # R, U1, U2, S, I

    assert cells("XOR") == pytest.approx([0, 0, 0, 1, 1], abs=1e-6)
    assert cells("RDN") == pytest.approx([1, 0, 0, 0, 1], abs=1e-6)
    assert cells("COPY") == pytest.approx([0, 1, 1, 0, 2], abs=1e-6)
    assert cells("UNQ") == pytest.approx([0, 1, 0, 0, 1], abs=1e-6)
    # each gate's rule is printed (the heading had referred to statements only --json gave)
    assert "XOR: Y = X1 xor X2" in out and "RDN: X1 = X2 = Y, one fair bit" in out


@pytest.mark.parametrize("as_json", [False, True])
def test_demo_without_scikit_learn_says_so_before_printing(monkeypatch, capsys, as_json):
    """Without scikit-learn (an optional extra) the demo printed the gates, then a chained
    traceback (with --json: nothing at all on stdout); now one message and exit status 1."""
    monkeypatch.setitem(sys.modules, "sklearn", None)   # import sklearn raises ImportError
    assert main(["demo"] + (["--json"] if as_json else [])) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pip install 'fastpid[demo]'" in captured.err and "--no-data" in captured.err
    assert "Traceback" not in captured.err
    assert main(["demo", "--no-data"]) == 0            # the gates alone need nothing more


def test_demo_full_in_subprocess():
    """The whole demo (gates + clustered digits) as a user runs it, in a fresh process."""
    pytest.importorskip("sklearn")
    proc = subprocess.run(
        [sys.executable, "-m", "fastpid.cli", "demo", "--json"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert {g["name"] for g in rep["gates"]} >= set(KNOWN_BITS)

    d = rep["digits"]
    assert d["shape"] == [20, 20, 10]
    # a time says how it was taken and how much it varied: the median of 21 solves (3 runs of the
    # clustering and the estimate) and their range (the fastest of 3 and one run had no spread)
    assert rep["timed_calls"] == 21 and rep["timed_runs"] == 3
    for t in (d["clustering"], d["exact"], d["proxy"], d["estimate"]):
        lo, hi = t["seconds_range"]
        assert 0 < lo <= t["seconds"] <= hi
    text = format_digits(d)
    assert "time: median of 21 calls" in text and text.count("median of 3 runs") == 2
    assert text.count("(range ") == 4
    assert d["samples"] == 1797
    ex, px = d["exact"], d["proxy"]
    assert ex["converged"] is True and 0.0 <= ex["gap"] <= GAP_BITS
    for res in (ex, px):
        assert sum(res[t] for t in TERMS) == pytest.approx(res["mi"], abs=1e-9)
        assert res["redundancy"] + res["unique1"] == pytest.approx(res["mi1"], abs=1e-9)
        assert res["redundancy"] + res["unique2"] == pytest.approx(res["mi2"], abs=1e-9)
        assert min(res[t] for t in TERMS) >= -res["gap"] - 1e-10
    # The proxy's V is an upper bound, so its synergy can only be smaller.
    assert px["synergy"] <= ex["synergy"] + ex["gap"] + 1e-10
    for term in TERMS:
        lo, hi = d["proxy_bracket"][term]
        assert lo - 1e-9 <= ex[term] <= hi + 1e-9
    # Two views of the same digit share much information about the label.
    assert ex["redundancy"] > 0.1 and ex["mi"] > 1.0
    # The estimate from the same samples: intervals around the corrected values, the plug-in
    # synergy (the exact row) corrected downwards, a p-value of the 29-draw test.
    est = d["estimate"]
    for term in TERMS:
        assert 0.0 <= est["ci_low"][term] <= est[term] <= est["ci_high"][term]
    assert est["synergy"] < ex["synergy"]
    assert 1 / 30 - 1e-12 <= est["synergy_p_value"] <= 1.0
    assert "95% interval" in est["table"]
    # The smallest p-value of the draws is a bound (the table prints "≤"); the JSON had given
    # 0.0333 as a value, without the number of draws.
    assert est["n_null"] == 29
    assert est["synergy_p_value_is_bound"] == (est["synergy_p_value"] <= (1 + 1e-9) / 30)
    assert est["synergy_p_value_is_bound"] == ("≤" in est["table"].split("synergy")[1].splitlines()[0])


def test_python_dash_m_fastpid_runs_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "fastpid", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fastpid {version('fastpid')}"


def test_info_json(capsys):
    info = _json_out(capsys, ["info", "--json"])
    assert info["fastpid"] == version("fastpid")
    assert info["native"]["native"] is True, info["native"]
    assert info["backends"]["cpp"]["available"] is True
    assert set(info["backends"]) == {"torch", "cpp", "cuda", "triton", "cvx"}
