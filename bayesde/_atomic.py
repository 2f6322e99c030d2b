"""Folders that appear whole or not at all: the one staging helper of bayesde.

A writer fills a hidden sibling folder and then moves it into place with
`os.replace`; an existing folder is first swapped aside (`.NAME.old-PID`) and removed
only once the new one is in place. A crash between the two renames leaves the old
folder under its `.old-` name, and `recover` puts it back. Used by `Posterior.save`
(through `bayesde._io`) and by every command-line output.
"""

from __future__ import annotations

import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["staged_dir", "claim_dir", "recover"]


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{os.getpid()}"


@contextmanager
def staged_dir(path, *, create: bool = True) -> Iterator[Path]:
    """Write a folder atomically.

    **Arguments:**

    - `path`: the folder to (re)place. An existing one is replaced only when the block
      succeeds; on any exception (including `KeyboardInterrupt`) it is left untouched
      and the staging folder is removed.
    - `create`: make the (empty) staging folder; `False` yields a path that does not
      exist yet, for writers that refuse an existing folder.

    **Returns:** (as the context value) the staging folder to write into.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if create:
        tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = _sibling(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def claim_dir(path, *, overwrite: bool, marker: str, what: str = "output") -> Optional[str]:
    """Check that `path` may be written: it does not exist, or `overwrite` is set and
    it is an empty folder or one that bayesde wrote (it holds `marker`).

    **Arguments:**

    - `path`: the folder.
    - `overwrite`: whether replacing an existing folder was asked for.
    - `marker`: the file name that shows bayesde wrote the folder (`bayesde.json`, ...).
    - `what`: how to name the folder in the message (`"--out"`, `"save"`).

    **Returns:** `None` when the folder may be written, else the reason it may not (a
    sentence for the user; the caller raises its own error type).
    """
    path = Path(path)
    if not path.exists():
        return None
    if not overwrite:
        return f"{what} {str(path)!r} already exists; pass --force to replace it, or choose another folder."
    if not path.is_dir():
        return f"{what} {str(path)!r} exists and is not a folder; refusing to replace it."
    if not (path / marker).exists() and any(path.iterdir()):
        return (
            f"{what} {str(path)!r} exists and was not written by bayesde (no {marker} inside); refusing to "
            "replace it even with --force. Choose another folder."
        )
    return None


def recover(path, *, marker: str, what: str = "version") -> bool:
    """Put back a folder whose replacement was interrupted between the two renames.

    **Returns:** whether a folder was restored (a warning says so).
    """
    path = Path(path)
    if path.exists() or not path.parent.exists():
        return False
    old = [o for o in sorted(path.parent.glob(f".{path.name}.old-*")) if (o / marker).exists()]
    if len(old) != 1:
        return False
    os.replace(old[0], path)
    warnings.warn(
        f"a write to {str(path)!r} was interrupted; restored the previous {what} from {str(old[0])!r}.",
        stacklevel=3,
    )
    return True
