"""User-facing errors: every message says what was wrong and what is possible instead."""


class AepError(Exception):
    """An error caused by user input (data, checkpoint, settings), with a message meant for people."""


class DataError(AepError):
    """A dataset is missing, unreadable or malformed."""


class CheckpointError(AepError):
    """A checkpoint file is not ours, is corrupt, or does not match its own configuration."""


class ConfigError(AepError):
    """A setting is out of range or contradicts another one."""
