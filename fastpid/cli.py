"""Command line: ``fastpid demo``, ``fastpid info``, ``fastpid --version``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

__all__ = ["main"]


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("fastpid")
    except PackageNotFoundError:  # running from a source tree that is not installed
        import fastpid

        return getattr(fastpid, "__version__", "unknown")


def _cmd_demo(args: argparse.Namespace) -> int:
    from fastpid.demo import run

    try:
        run(as_json=args.json, data=not args.no_data)
    except ImportError as exc:  # a missing optional dependency: its message, not a traceback
        print(f"fastpid demo: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import numpy
    import torch

    import warnings

    from fastpid import backends
    from fastpid._build_info import build_info

    info = {
        "fastpid": _version(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch_cuda_available": bool(torch.cuda.is_available()),
    }
    with warnings.catch_warnings():  # the warning that the extension is unavailable points here
        warnings.filterwarnings("ignore", message="fastpid's native extension is unavailable")
        info.update(native=build_info(), backends=backends())
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    native, available = info.pop("native"), info.pop("backends")
    for key, value in info.items():
        print(f"{key:<22} {value}")
    print("backends:")
    for name, state in available.items():
        print(f"  {name:<22} {'available' if state['available'] else 'unavailable: ' + state['reason']}")
    print("native extension (fastpid._C):")
    for key, value in native.items():
        print(f"  {key:<22} {value}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but a failed write of its help to stdout is raised, not dropped
    (unbuffered help to a full disk exited 0 with nothing written): main() reports it. Its
    messages to stderr (usage errors) are written as argparse writes them."""

    def _print_message(self, message, file=None):
        if message and file is not None and file is sys.stdout:
            file.write(message)
        else:
            super()._print_message(message, file)


def _write_failed(what: str, exc: OSError) -> int:
    """Exit status 1 for a failed write to stdout (``exc``'s message; none for a closed pipe,
    e.g. ``fastpid demo --json | head``), with stdout pointed at the null device: the
    interpreter's own flush at exit would fail again, print "Exception ignored" and exit 120."""
    import os

    if not isinstance(exc, BrokenPipeError):
        print(f"fastpid {what}: {exc}", file=sys.stderr)
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError):  # a stdout object with no descriptor: nothing to flush at exit
        return 1
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    return 1


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastpid",
        description="Fast, certified BROJA partial information decomposition.",
    )
    # A flag, not argparse's version action, which printed outside main()'s write-error
    # handling (a full disk exited 0).
    parser.add_argument("--version", action="store_true", dest="show_version", help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="decompose the canonical gates and a real data set (sklearn digits)",
        description="Decompose the canonical gates (XOR, AND, COPY, ...) and two clustered "
        "views of scikit-learn's bundled handwritten digits; values in bits.",
    )
    demo.add_argument("--json", action="store_true", help="print the numbers as JSON instead of tables")
    demo.add_argument("--no-data", action="store_true", help="only the canonical gates (skip the digits data set)")
    demo.set_defaults(func=_cmd_demo, command_parser=demo)

    info = sub.add_parser("info", help="versions and how the native extension was built",
                          description="Versions of fastpid, Python, numpy and torch; which backends "
                          "are available (and why not); how the native extension was built.")
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(func=_cmd_info, command_parser=info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args, extra = parser.parse_known_args(argv)
        except SystemExit as stop:  # argparse has printed help (code 0) or a usage error (2)
            if stop.code == 0 and sys.stdout is not None:  # (help with stdout closed: on stderr)
                sys.stdout.flush()  # help on a full disk exited 0 with nothing written
            raise
    except OSError as exc:  # the help's write (unbuffered stdout) or its flush
        return _write_failed("--help", exc)
    if args.show_version:  # before any command, as argparse's own action
        args.command, args.func, extra = "--version", lambda _: print(f"fastpid {_version()}") or 0, []
    if args.command is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help(sys.stderr)
        print("\nfastpid: error: a command is required (demo or info)", file=sys.stderr)
        return 2
    if extra:  # with the command's own usage line, not the top-level one
        at = argv.index(args.command) if args.command in argv else 0
        own = {o for action in args.command_parser._actions for o in action.option_strings}
        # only options the command takes (the hint had suggested `fastpid info --no-data`, an
        # option info does not have), and no command line that repeats one given after it
        misplaced = [a for a in extra if a in argv[:at] and a in own]
        moved = [a for a in misplaced if a not in argv[at + 1:]]
        hint = (" (options go after the command" + (f": fastpid {args.command} {' '.join(moved)})" if moved else ")")
                if misplaced else "")
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if sys.stdout is None:  # e.g. `fastpid info >&-`: nowhere to write the results
        print(f"fastpid {args.command}: no standard output to write to (it is closed)", file=sys.stderr)
        return 1
    if hasattr(sys.stdout, "reconfigure"):
        # A terminal or pipe whose encoding lacks a character of the tables (an em dash in a
        # latin-1 locale) shows '?' there instead of stopping the demo halfway.
        sys.stdout.reconfigure(errors="replace")
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, so that a full disk is reported like any write error
        return code
    except OSError as exc:  # stdout on a full disk, or a closed pipe
        return _write_failed(args.command, exc)
    except KeyboardInterrupt:
        print(f"fastpid {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m fastpid.cli
    raise SystemExit(main())
