"""Writing output files safely: check first, then write through a temporary file.
(And, at the end, where a relative default input is looked for, and the one
"not found" message.)

Every output of minillama (predictions, generated text, reports, checkpoints,
adapters) goes through `atomic_write`, so a crash or a user mistake never
leaves a half-written file behind, and `check_writable` runs before any long
work so a bad output path fails in the first second, not after training.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Dict, Optional

from .distributed import barrier, is_main
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
    On any failure the temporary file is removed and `path` is untouched.
    Under torchrun only rank 0 writes (distributed.py: every rank holds the same result),
    and every rank waits until it has, so all of them can read the file afterwards."""
    if not is_main():
        return barrier()
    check_writable(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())  # some writers (safetensors) create their files 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        barrier()


def atomic_write_text(path: str, text: str):
    """Write a UTF-8 text file atomically."""
    def write(tmp: str):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


# -- reading: missing inputs, and where a relative default is looked for ------------------
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the parent of the minillama package


def not_found(what: str, path: str, hint: str, repo_too: bool = False) -> MinillamaError:
    """The one "not found" error: what is missing, every place it was looked for
    (with repo_too, a relative path was also tried under the repository root, see
    resolve_repo_path) and `hint`, how to get it.  Returned, not raised, so each
    caller's `raise` stays visible in its own code."""
    places = [os.path.abspath(path)]
    if repo_too and not os.path.isabs(path):
        in_repo = os.path.join(REPO_ROOT, path)
        if in_repo != places[0]:
            places.append(in_repo)
    return MinillamaError(f"{what} not found: {path} (looked for {' and '.join(places)}); {hint}")


def resolve_repo_path(path: str) -> str:
    """A relative path that is missing under the working directory but present
    under the repository root (where setup.sh downloads stories42M.pt and
    tokenizer.model) resolves there, so the defaults work from any directory.
    Anything else (absolute, present here, or present nowhere) comes back unchanged."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    in_repo = os.path.join(REPO_ROOT, path)
    return in_repo if os.path.exists(in_repo) else path


def adapter_files(path: Optional[str]) -> Dict[str, Optional[str]]:
    """What save_adapter(PATH) writes: PATH.safetensors and PATH.json (adapters/io.py)."""
    return {".safetensors": path and path + ".safetensors", ".json": path and path + ".json"}


def check_distinct_paths(paths: Dict[str, Optional[str]]):
    """Refuse, before anything loads or is written, two {flag: path} entries that name
    the same file (compared resolved: realpath, and samefile where both exist).
    None / empty paths are files not asked for."""
    seen = []
    for flag, path in paths.items():
        if not path:
            continue
        real = os.path.realpath(path)
        for other_flag, other_path, other_real in seen:
            same = real == other_real
            if not same and os.path.exists(path) and os.path.exists(other_path):
                try:
                    same = os.path.samefile(path, other_path)
                except OSError:
                    same = False
            if same:
                raise MinillamaError(f"{other_flag} and {flag} name the same file ({path}): "
                                     f"choose different paths")
        seen.append((flag, path, real))
