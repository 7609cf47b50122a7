"""Command-line argument types shared by the example scripts."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path

__all__ = ["int_at_least", "float_between", "read_saved_run", "BATCH_SIZE"]


def int_at_least(low: int, why: str = ""):
    """An argparse ``type``: an integer ``>= low``; a smaller one is a usage error that gives
    ``why``."""
    def parse(text: str) -> int:
        value = int(text)  # a ValueError: argparse says "invalid int value"
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{why}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_between(low: float, high: float, why: str = ""):
    """An argparse ``type``: a number strictly between ``low`` and ``high``; any other (NaN
    included) is a usage error that gives ``why``."""
    def parse(text: str) -> float:
        value = float(text)  # a ValueError: argparse says "invalid float value"
        if not low < value < high:
            raise argparse.ArgumentTypeError(f"must be a number in ({low}, {high}){why}, got {value}")
        return value

    parse.__name__ = "float"
    return parse


class Distinct(argparse.Action):
    """A list option (``nargs="+"``) whose values may not repeat: run_fair with ``--arms fused
    fused+heads fused`` trained every run, then failed pairing 4 seeds with 2 (nothing
    written); a repeated data set was trained twice, the second overwriting the first."""

    def __call__(self, parser, namespace, values, option_string=None):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
        if repeated:
            parser.error(f"{option_string}: {', '.join(map(repr, repeated))} given more than once")
        setattr(namespace, self.dest, values)


def read_saved_run(ap: argparse.ArgumentParser, path, keys=(), option: str = "--replot"):
    """The JSON object saved at ``path`` by a run of the script of ``ap``. A file that cannot be
    read, is not JSON, or is not an object with the top-level ``keys`` is a usage error
    (``ap.error``, exit status 2) that names the file and the problem, not a traceback."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        ap.error(f"{option}: cannot read {str(path)!r}: {e.strerror or e}")
    try:
        saved = json.loads(raw)
    except ValueError as e:  # json.JSONDecodeError, UnicodeDecodeError
        ap.error(f"{option}: {str(path)!r} is not a JSON file: {e}")
    missing = [k for k in keys if k not in saved] if isinstance(saved, dict) else list(keys)
    if missing:
        ap.error(f"{option}: {str(path)!r} is not a saved run of this script (no {missing} at its top level)")
    return saved


def run_arguments(argv) -> list:
    """The run's arguments (``sys.argv[1:]`` where ``argv`` is ``None``) less ``--out FOLDER``,
    which changes where it writes, not what: recorded, shell-quoted, so the run can be repeated."""
    out, skip = [], False
    for a in sys.argv[1:] if argv is None else argv:
        if skip or a == "--out" or a.startswith("--out="):
            skip = a == "--out"
            continue
        out.append(a)
    return out


def machine() -> str:
    """The CPU's model and core count, and the machine's architecture."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores ({platform.machine()})"


def as_json(obj) -> str:
    """``obj`` as strict JSON text (indent 1): NaN and infinite numbers, which JSON has no
    words for, as ``null`` (Python's NaN made the saved runs unreadable to other parsers; the
    scripts' readers take ``null`` as NaN)."""
    def finite(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [finite(v) for v in o]
        return o
    return json.dumps(finite(obj), indent=1, allow_nan=False)


def command(script: str, argv) -> str:
    """``python -m examples.<script>`` with the recorded arguments (:func:`run_arguments`)."""
    return " ".join(["python -m examples." + script] + ([shlex.join(argv)] if argv else []))


#: Where the runners write without ``--out``: the committed results.
RESULTS = Path(__file__).parent / "results"
#: The help of every runner's ``--out``.
OUT_HELP = ("output folder (default examples/results, overwriting the committed results; with --replot, "
            "the saved run's folder)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (``None``: the help
    says what happens then; "(default: None)" had followed it)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def add_output_options(ap: argparse.ArgumentParser, replot_help: str) -> None:
    """``--out`` (default ``None``: :data:`RESULTS`, or the saved run's folder with ``--replot``)
    and ``--replot JSON``, whose outputs are named after the saved file (a copy saved under
    another name replaced the tables, and with run_fair the JSON, of the run named in it)."""
    ap.add_argument("--out", type=folder_name, default=None, help=OUT_HELP)
    ap.add_argument("--replot", metavar="JSON", type=Path, help=replot_help + "; its files are named after JSON's")


def results_folder(ap: argparse.ArgumentParser, args) -> Path:
    """The folder a run writes to, made before any training: ``--out``; without it the
    saved run's folder (``--replot``, which wrote there whatever ``--out`` said) or
    :data:`RESULTS`. A run that plots needs matplotlib, checked here too (without it the
    runners failed after training, their tables unwritten)."""
    if not getattr(args, "no_plots", True) and importlib.util.find_spec("matplotlib") is None:
        ap.error("the plots need matplotlib (pip install matplotlib, or the [examples] extra); or pass --no-plots")
    if args.replot:
        # A replot trains nothing: options of a training run would be silently ignored.
        given = [f"--{dest.replace('_', '-')}" for dest, value in vars(args).items()
                 if dest not in ("out", "replot", "no_plots") and value != ap.get_default(dest)]
        if given:
            ap.error(f"--replot rewrites a saved run's tables and trains nothing: {', '.join(given)} "
                     "would be ignored; drop them (or run without --replot)")
    if args.out is None:
        return Path(args.replot).parent if args.replot else output_folder(ap, RESULTS)
    return output_folder(ap, args.out)


def folder_name(text: str) -> Path:
    """A folder option's value; an empty one (an unset ``"$DIR"``) had been read as ``"."``,
    and the results landed in the working folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the folder name is empty; give a folder (e.g. --out results)")
    return Path(text)


def output_folder(ap: argparse.ArgumentParser, path, option: str = "--out") -> Path:
    """``path`` as a folder that exists, made before any training: one that cannot be made
    (a file of that name, no permission) is a usage error, not a traceback after the run
    (run_curricula trained every data set, about 12 minutes, and lost them)."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"{option}: cannot make the folder {str(folder)!r}: {e.strerror or e}")
    return folder


#: The training loops skip batches of fewer than 2 samples, so a batch size of 1 would train
#: nothing and every method would report its untrained accuracy.
BATCH_SIZE = int_at_least(2, " (the training loops skip batches of one sample, so 1 would train nothing)")
