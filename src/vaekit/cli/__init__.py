"""The `vaekit` command: parse, call into the package, print. Errors become one line and an exit code."""

from __future__ import annotations

import errno
import os
import signal
import sys

from .. import __version__
from ..errors import ConfigError, Interrupted, VaekitError
from . import (anomaly, compress, data, disentangle, evaluate, explore, generate, plot, pretrained, report, represent,
               samplers, train)
from .args import Parser, add_threads_argument
from .vocabulary import COMPUTE as COMPUTE_COMMANDS  # the subcommands that compute with torch: each takes --threads

DESCRIPTION = """\
vaekit: variational autoencoders on image data.

Start with `vaekit train --out runs/seed`, then `vaekit sample runs/seed -o samples.png`.
Each subcommand's --help shows examples. Exit codes: 0 ok, 2 bad arguments, 3 data, 4 run
directory, 5 output, 6 training, 130 interrupted, 70 internal error.
"""

INTERNAL_ERROR = 70
# The subcommands that run as one job of several processes under torchrun (vaekit.distributed); the others refuse.
DISTRIBUTED = ("train", "eval", "score", "embed", "compress", "decompress")


def build_parser() -> Parser:
    parser = Parser(prog="vaekit", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (train, evaluate, generate, represent, anomaly, compress, plot, report, samplers, data, disentangle,
                   explore, pretrained):
        module.register(subparsers)
    for name in COMPUTE_COMMANDS:
        add_threads_argument(subparsers.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    _print_any_file_name()
    if hasattr(signal, "SIGTERM"):  # a scheduler's SIGTERM stops as cleanly as Ctrl-C
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 0
        apply_threads(args)
        args.argv = list(argv)  # for `vaekit train --nproc`, which starts the same command in each process
        return run_command(args)
    except VaekitError as e:
        if debug:
            raise
        if isinstance(e, Interrupted):
            _forget_unhandled_interrupt()
        if process_rank() and (isinstance(e, Interrupted) or getattr(e, "quiet", False)):
            return e.exit_code  # the job's main process says what happened
        print(f"vaekit: {'interrupted' if isinstance(e, Interrupted) else 'error'}{rank_note()}: "
              f"{printable(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        _forget_unhandled_interrupt()
        if not process_rank():
            print("vaekit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: say so in one line, with a way to see more
        if debug:
            raise
        if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:  # any path argument, wherever it is first used
            name = str(e.filename)
            shown = name if len(name) <= 60 else f"{name[:40]}...({len(name):,} characters)"
            print(f"vaekit: error: {printable(shown)}: file name too long for this system", file=sys.stderr)
            return ConfigError.exit_code
        print(f"vaekit: internal error{rank_note()}: {type(e).__name__}: {printable(str(e))} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return INTERNAL_ERROR


def run_command(args) -> int:
    """args.func(args); in the job's process group (vaekit.distributed) when torchrun started this process."""
    if not process_rank() and os.environ.get("WORLD_SIZE", "1").strip() in ("", "1"):
        return args.func(args)  # one process: torch.distributed is not even imported
    from ..devices import resolve_device
    from ..distributed import EVALUATION_TIMEOUT, TIMEOUT, env_int, joined, launched

    if not launched():
        return args.func(args)
    if args.command not in DISTRIBUTED:
        raise ConfigError(f"vaekit {args.command} runs in one process; under torchrun only "
                          f"{', '.join(DISTRIBUTED)} share their work between processes")
    if getattr(args, "nproc", None) not in (None, env_int("WORLD_SIZE")):  # before waiting for the other processes
        raise ConfigError(f"--nproc {args.nproc} starts its own processes; under torchrun drop it "
                          "(--nproc_per_node sets the count)")
    timeout = TIMEOUT if args.command == "train" else EVALUATION_TIMEOUT
    with joined(resolve_device(getattr(args, "device", "auto")), timeout):
        return args.func(args)


def process_rank() -> int:
    """This process's rank in a torchrun job (0 for the main process, and outside a job)."""
    text = os.environ.get("RANK", "0").strip()
    return int(text) if text.isascii() and text.isdigit() else 0


def rank_note() -> str:
    """' (process R of N)' in an error line printed by a process other than a job's main one."""
    rank = process_rank()
    return f" (process {rank} of {os.environ.get('WORLD_SIZE', '?')})" if rank else ""


def apply_threads(args) -> None:
    """Set torch's CPU threads from --threads (or $VAEKIT_THREADS, or the default policy) for compute commands."""
    if args.command in COMPUTE_COMMANDS:
        from ..threads import set_threads

        set_threads(args.threads, warn=lambda line: print(f"vaekit: {line}", file=sys.stderr))


def printable(text: str) -> str:
    """`text` with every control character escaped (\\x0c, \\n): an error quotes names and values read from untrusted
    files, and must stay one line that cannot drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_any_file_name() -> None:
    """A file name that is not UTF-8 reaches Python with lone surrogates, which a strict stdout cannot encode:
    print them escaped (\\udcff), as stderr already does, instead of failing after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _forget_unhandled_interrupt() -> None:
    """Keep exit code 130 after a Ctrl-C that we handled.

    CPython marks a KeyboardInterrupt as unhandled when it leaves code run by `exec(<string>)` (as
    dataclasses and torch do while building classes), even if a caller catches it; under
    `python -m vaekit` the interpreter then ends by killing itself with SIGINT instead of returning
    our exit code. Running any string to completion clears that mark.
    """
    exec("")
