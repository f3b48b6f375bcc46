"""Errors a user can cause and fix. The CLI prints each as one line and exits with its code."""


class VaekitError(Exception):
    """Base of every error the user can act on; `exit_code` is the CLI's exit status for it."""

    exit_code = 1


class ConfigError(VaekitError):
    """An argument or config value is out of range, of the wrong type, or unknown."""

    exit_code = 2


class DataError(VaekitError):
    """Data is missing, corrupt, or not in a format vaekit reads."""

    exit_code = 3


class RunError(VaekitError):
    """A run directory is missing, incomplete, from an incompatible version, or inconsistent."""

    exit_code = 4


class OutputError(VaekitError):
    """A result cannot be written where it was asked to go."""

    exit_code = 5


class TrainingError(VaekitError):
    """Training cannot go on (for example, the loss became NaN)."""

    exit_code = 6


class Interrupted(VaekitError):
    """The user stopped a command (Ctrl-C or SIGTERM); what was already saved stays."""

    exit_code = 130
