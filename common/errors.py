"""Errors that end a command with one clear line instead of a traceback."""


class Kube2RedisError(Exception):
    """Base of errors the CLI reports as one line and a non-zero exit."""

    exit_code = 1


class ConfigError(Kube2RedisError):
    """A setting is wrong: names the option and why."""

    exit_code = 2
