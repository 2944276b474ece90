"""The exceptions the CLI turns into one line on stderr and a non-zero exit code, never a traceback."""


class FastMnistError(Exception):
    """A problem with the user's input or environment, not a bug: one line, exit code 2."""

    exit_code = 2


class DataError(FastMnistError):
    """Missing, corrupt or unverifiable MNIST files."""


class OutputError(FastMnistError):
    """The work was done but a result could not be written where asked: exit code 1, and the message says
    where the result was saved instead."""

    exit_code = 1


class StoreError(FastMnistError):
    """The shared store (SQLite file, PostgreSQL server) failed mid-run: exit code 4. Finished runs stay in
    it, and the same command resumes once it answers again."""

    exit_code = 4
