"""The one exception type the CLI turns into a one-line message and exit code 2."""


class FastMnistError(Exception):
    """A problem with the user's input or environment, not a bug: shown as one line, no traceback."""


class DataError(FastMnistError):
    """Missing, corrupt or unverifiable MNIST files."""
