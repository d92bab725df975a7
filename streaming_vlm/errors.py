"""User-facing errors: bad input is reported as one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Something the user can fix (a path, a flag, a config value). Printed as one line; exit code 2."""


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int | None]:
    """Wrap a CLI `main` so a UserError (or Ctrl-C) ends the process with one line on stderr."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
