"""What happens to the files a command writes: checked before any work, never half-replaced, never an input.

Every entry point (the inference CLI, `python -m streaming_vlm.eval`, the data tools) goes through this module, so
the rules hold the same way everywhere:

- `check_output(path, inputs)` runs before any model or data loads: the parent folder must exist and be writable,
  the path must not be a folder, and it must not be (or overwrite a file inside) one of the command's inputs.
- `PartialOutput(path)`: a streamed output. Text goes to `<path>.partial` in the same folder and is flushed after
  every write, so `tail -f <path>.partial` follows a run. `commit()` renames it onto `path` in one atomic step (a
  clean end: end of the stream, Ctrl-C, SIGTERM); `keep()` leaves `<path>.partial` as it is and `path` untouched
  (a failed run). A SIGKILL leaves the `.partial` file. A path that is not a regular file (`/dev/null`, a pipe,
  `/dev/stdout`) is written directly.
- `write_atomic(path, data)` / `atomic_writer(path)`: a whole output written to a temporary file in the same folder
  and renamed onto `path` only once complete; on failure the temporary file is removed and `path` is untouched.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import IO, Iterable, Iterator

from streaming_vlm.errors import UserError

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def _is_special(path: Path) -> bool:
    """An existing path that is not a regular file or folder (a device, a pipe): written in place, never renamed."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _same_or_inside(output: Path, source: Path) -> bool:
    """True if writing `output` would overwrite `source` (the same file) or a file inside the folder `source`."""
    try:
        if output.exists() and source.exists() and os.path.samefile(output, source):
            return True
    except OSError:
        pass
    out, src = output.resolve(), source.resolve()
    if out == src:
        return True
    return src.is_dir() and output.exists() and src in out.parents


def check_output(path: str | os.PathLike | None, inputs: Iterable[str | os.PathLike | None] = (),
                 what: str = "output") -> Path | None:
    """Validate an output path before any work starts; returns it as a Path (None stays None). UserError if bad."""
    if path is None or str(path) == "-":
        return None
    if str(path) == "":
        raise UserError(f"{what} path is empty")
    out = Path(path)
    if _is_special(out):
        return out
    for source in inputs:
        if source is not None and str(source) not in ("", "-") and _same_or_inside(out, Path(source)):
            raise UserError(f"{what} {out} is also an input of this command; choose another path")
    if out.is_dir():
        raise UserError(f"{what} {out} is a folder; give a file path")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{what} folder does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} folder is not writable: {parent}")
    if out.exists() and not os.access(out, os.W_OK):
        # a rename would still replace it; refuse, since the user protected it
        raise UserError(f"{what} {out} exists and is read-only")
    return out


def check_outputs(paths: dict[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """`check_output` for several named outputs, which must also differ from one another."""
    inputs = list(inputs)
    seen: dict[Path, str] = {}
    for what, path in paths.items():
        out = check_output(path, inputs, what)
        if out is None or _is_special(out):
            continue
        key = out.resolve()
        if key in seen:
            raise UserError(f"{what} and {seen[key]} are the same file: {out}")
        seen[key] = what


class PartialOutput:
    """A text output streamed to `<path>.partial`, flushed on every write, renamed onto `path` by `commit()`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.direct = _is_special(self.path)
        self.partial = self.path if self.direct else partial_path(self.path)
        try:
            self.fh: IO[str] | None = open(self.partial, "w", encoding="utf-8")
        except OSError as err:
            raise UserError(f"cannot write {self.partial}: {err.strerror or err}") from None

    def write(self, text: str) -> None:
        assert self.fh is not None, "write after close"
        self.fh.write(text)
        self.fh.flush()

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()

    def _close(self) -> bool:
        if self.fh is None:
            return False
        self.fh.flush()
        if not self.direct:
            with contextlib.suppress(OSError):
                os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None
        return True

    def commit(self) -> None:
        """A clean end: the output replaces `path` in one step."""
        if self._close() and not self.direct:
            os.replace(self.partial, self.path)

    def keep(self) -> None:
        """A failed run: `path` is left as it was; what was made stays in `<path>.partial`."""
        if self._close() and not self.direct:
            print(f"the output made so far is kept in {self.partial} ({self.path} was not replaced)",
                  file=sys.stderr)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to `path`; on a clean exit it is renamed onto `path`, else removed."""
    path = Path(path)
    if _is_special(path):
        with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            with contextlib.suppress(OSError):
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    with atomic_writer(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
