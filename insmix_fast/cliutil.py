"""What every ``insmix-fast`` sub-command shares: argument types that check values as
they are parsed, output-path checks, and running a parsed command with one-line errors.

A sub-CLI module (``insmix_fast.gan.cli``, ``insmix_fast.experiments.cli``, ...) exposes
``register(subparsers) -> None``: it adds its command to an ``argparse`` sub-parser set and
sets the handler as ``args.func`` (``func(args) -> int``). :mod:`insmix_fast.cli` imports the
sub-CLIs and builds the one parser; a sub-CLI never imports :mod:`insmix_fast.cli`. Its
standalone entry point, if any, is :func:`standalone`.

Errors: an :class:`~insmix_fast.errors.InsMixError`, an ``OSError`` or a missing optional
package (``ImportError``) raised by a command is printed as ONE line
``insmix-fast: error: ...`` on stderr and the exit code is 2 (argparse's own usage errors
also exit with 2); anything else is a bug and keeps its traceback.

>>> import argparse
>>> p = argparse.ArgumentParser(prog="demo")
>>> _ = p.add_argument("--tiles", type=integer(1))
>>> p.parse_args(["--tiles", "3"]).tiles
3
>>> number(0, 1, lo_open=True)("0.5")
0.5
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, InsMixError
from .validation import check_int, check_number

__all__ = ["PROG", "integer", "number", "output_dir", "output_file", "error_line", "run", "standalone"]

PROG = "insmix-fast"


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: the text as an int in ``[lo, hi]`` (a clear usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        try:
            return check_int("value", v, lo, hi)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).replace("value must be an ", "must be an ")) from None

    parse.__name__ = "integer"
    return parse


def number(lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: the text as a finite float in the interval."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        try:
            return check_number("value", v, lo, hi, lo_open=lo_open, hi_open=hi_open)
        except ConfigError:
            if not math.isfinite(v):
                raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}") from None
            left = f"{'>' if lo_open else '≥'} {lo:g}" if math.isfinite(lo) else ""
            right = f"{'<' if hi_open else '≤'} {hi:g}" if math.isfinite(hi) else ""
            raise argparse.ArgumentTypeError(f"must be {' and '.join(x for x in (left, right) if x)}, got {text}") from None

    parse.__name__ = "number"
    return parse


def _writable_dir(d: Path, what: str) -> None:
    """Create the folder ``d`` if needed and check that a file can be written in it (a real
    write, so permissions, read-only file systems and ``/proc`` are all caught)."""
    probe = d
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what}: {probe} is a file, not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as e:
        raise ConfigError(f"{what}: cannot write in {d} ({e.strerror or e})") from None


def output_dir(path, name: str = "--out") -> Path:
    """Check, before any work, that ``path`` is a folder files can be written in (created if needed)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{name} {p}: exists and is not a folder")
    _writable_dir(p, f"{name} {p}")
    return p


def output_file(path, name: str = "--output") -> Path:
    """Check, before any work, that the file ``path`` can be written: not a folder, and its folder
    (created if needed) takes files."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{name} {p}: is a folder; give a file name")
    _writable_dir(p.parent, f"{name} {p}")
    return p


def error_line(e: BaseException) -> str:
    """The one-line message for an error a command raised."""
    if isinstance(e, OSError) and e.strerror:
        names = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        return f"{e.strerror}: {names}" if names else e.strerror
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())  # one line


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command (``args.func``) with one-line errors."""
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:  # pragma: no cover - every registered command sets one
        parser.error("no command given")
    try:
        return int(func(args) or 0)
    except (InsMixError, OSError, ImportError) as e:
        print(f"{parser.prog}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def standalone(command: str, register: Callable[[argparse._SubParsersAction], None],
               argv: list[str] | None = None, description: str | None = None) -> int:
    """Run one sub-CLI on its own (``python -m insmix_fast.gan.cli train ...``): a parser
    with only ``command``; a leading ``command`` in ``argv`` may be omitted."""
    parser = argparse.ArgumentParser(prog=PROG, description=description)
    sub = parser.add_subparsers(dest="command", metavar=command)
    sub.required = True
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != command:
        argv = [command, *argv]
    return run(parser, argv)
