"""`python -m vaekit`: the CLI, with Ctrl-C and SIGTERM handled from the first instant.

The handlers go in before anything heavy is imported: a signal while torch loads (the first second
of any command) ends in one line and exit 130, as it does later, not in a traceback or a bare -15.
"""

import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    """Run the CLI (the `vaekit` console command too); returns the exit code."""
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        exec("")  # see cli._forget_unhandled_interrupt: keep exit code 130 under `python -m`
        print("vaekit: interrupted", file=sys.stderr)
        return 130
    try:
        return cli_main()
    finally:
        _ignore_late_signals()


def _ignore_late_signals() -> None:
    """Once the command has its exit code, a SIGTERM or Ctrl-C (torchrun stopping a job's processes after one of
    them died, say) must not raise into the interpreter's exit handlers and print a traceback there."""
    for name in ("SIGTERM", "SIGINT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


if __name__ == "__main__":
    raise SystemExit(main())
