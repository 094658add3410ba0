"""Writing output files safely: check first, then write through a temporary file.

Every output of minillama (predictions, generated text, reports, checkpoints,
adapters) goes through `atomic_write`, so a crash or a user mistake never
leaves a half-written file behind, and `check_writable` runs before any long
work so a bad output path fails in the first second, not after training.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Dict, Optional

from .errors import MinillamaError


def check_writable(path: Optional[str], flag: Optional[str] = None):
    """Raise MinillamaError when `path` cannot be created (missing directory, or a
    directory); `flag` names the option it came from.  None (no output asked for) passes."""
    if not path:
        return
    where = f"{flag}: " if flag else ""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise MinillamaError(f"{where}cannot write {path}: directory {directory} does not exist (create it first)")
    if os.path.isdir(path):
        raise MinillamaError(f"{where}cannot write {path}: it is a directory")
    try:  # the only sure test is to write: permissions, read-only mounts, quotas
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".minillama-probe-")
        probe.close()
    except OSError as e:
        raise MinillamaError(f"{where}cannot write {path}: directory {directory} is not writable "
                             f"({e.strerror}); choose another output path") from None


def check_all_writable(paths: Dict[str, Optional[str]]):
    """check_writable for every {flag: path} (None paths are outputs not asked for)."""
    for flag, path in paths.items():
        check_writable(path, flag)


def _new_file_mode() -> int:
    """The permissions open() gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str, write: Callable[[str], None]):
    """Call write(tmp_path) to produce the file, then rename it to `path`.
    On any failure the temporary file is removed and `path` is untouched."""
    check_writable(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())  # some writers (safetensors) create their files 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str):
    """Write a UTF-8 text file atomically."""
    def write(tmp: str):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)
