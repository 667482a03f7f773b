"""Atomic file writing: readers never see half a file, and a failure leaves nothing behind.

Every writer of the package (model files, logs, label maps, meshes, figures, JSON summaries) goes
through :func:`atomic_write`: the content is written to a temporary name in the destination folder
and renamed over the final name only when complete. :class:`OutputGroup` does the same for several
files that belong together (all renamed, or none left).

The temporary file is created with mode 0666 filtered by the user's umask, like any file ``open``
creates, so outputs get the permissions the user expects (``tempfile.mkstemp`` would give 0600, and
the rename would keep them). Nothing here imports torch or the network, so the I/O modules stay light.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, Dict, List, Union

PathLike = Union[str, "os.PathLike[str]"]
Writer = Callable[[str], None]


def temporary_path(path: PathLike) -> Path:
    """Create (empty, exclusively, umask-filtered mode) and return a hidden temporary file next to ``path``.

    The name ends with the final name, so writers that pick the format from the extension
    (``.nii.gz``, ``.vtk``, ``.png``) see the right one.
    """
    final = Path(path)
    for _ in range(100):
        tmp = final.with_name(f".{secrets.token_hex(4)}.tmp.{final.name}")
        try:
            fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name next to {final}")  # pragma: no cover


def _fsync(name: str) -> None:
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError:  # pragma: no cover - a writer that replaced the file by something unreadable
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without fsync
        pass
    finally:
        os.close(fd)


def remove_quietly(path: PathLike) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_write(path: PathLike, write: Writer, mkdir: bool = True) -> Path:
    """Call ``write(temporary_name)``, then rename the temporary file to ``path``.

    On any failure (including KeyboardInterrupt) the temporary file is removed and ``path`` is left
    as it was.
    """
    final = Path(path)
    if mkdir:
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    try:
        write(str(tmp))
        _fsync(str(tmp))
        os.replace(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise
    return final


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (creating the folder if needed)."""

    def write(name: str) -> None:
        with open(name, "wb") as fh:
            fh.write(data)

    atomic_write(path, write)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class OutputGroup:
    """Files that belong together, renamed into place together: all of them, or none.

    ``add(path, write)`` writes one file under a temporary name; :meth:`commit` renames them all. If
    anything fails before or during :meth:`commit` (or the group is left through an exception), the
    temporary files and the files already renamed are removed::

        with OutputGroup() as group:
            group.add(out / "a.nii.gz", lambda name: save(name))
            group.add(out / "a.json", lambda name: dump(name))
            group.commit()
    """

    def __init__(self) -> None:
        self._temps: Dict[Path, Path] = {}
        self._renamed: List[Path] = []
        self.committed = False

    def add(self, path: PathLike, write: Writer) -> None:
        final = Path(path)
        tmp = temporary_path(final)
        self._temps[final] = tmp
        write(str(tmp))
        _fsync(str(tmp))

    def commit(self) -> List[Path]:
        for final, tmp in list(self._temps.items()):
            os.replace(tmp, final)
            self._renamed.append(final)
            del self._temps[final]
        self.committed = True
        return list(self._renamed)

    def discard(self) -> None:
        for tmp in self._temps.values():
            remove_quietly(tmp)
        for final in self._renamed:
            remove_quietly(final)
        self._temps.clear()
        self._renamed.clear()

    def __enter__(self) -> OutputGroup:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.discard()
