"""Where a result came from: fastmnist's version, the commit of its checkout, and the command line, with
any password in a URL on it hidden."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from fastmnist.version import __version__

# Every place a SQLAlchemy or libpq connection string can carry a password: the URL's user-info
# (scheme://user:PASSWORD@host), a query parameter (?password=PASSWORD&..., libpq's form), and a keyword/value
# DSN (host=db password=PASSWORD or password='with spaces'). Percent-encoded or not, up to its delimiter.
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s?#]*:)(?P<password>\S+)(?P<at>@)")  # to the last @
KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'?|[^\s&;#'\"]+)")


def redact(text: str) -> str:
    """`text` with every password in it replaced by ***: one redactor for records, files and error lines."""
    return KEYWORD_PASSWORD.sub(r"\g<head>***", URL_PASSWORD.sub(r"\g<head>***\g<at>", text))


def git_state() -> dict:
    """The commit of the checkout fastmnist runs from, and whether its tree had changes, read when a record
    is made; {} when installed from elsewhere (a wheel) or git is absent."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def command_line() -> str:
    """The command as typed (`fastmnist ...` for the CLI), passwords hidden."""
    cli = Path(sys.argv[0]).name == "fastmnist" or Path(sys.argv[0]).parts[-2:] in (("cli", "__main__.py"),
                                                                                  ("fastmnist", "__main__.py"))
    words = ["fastmnist", *sys.argv[1:]] if cli else sys.argv
    return redact(shlex.join(words))


def provenance() -> dict:
    return {"fastmnist_version": __version__, **git_state(), "command": command_line(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
