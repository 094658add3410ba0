"""Writing output files safely: check first, then write through a temporary file.
(And, at the end, where a relative default input is looked for, and the one
"not found" message.)

Every output of minillama (predictions, generated text, reports, checkpoints,
adapters) goes through `atomic_write`, so a crash or a user mistake never
leaves a half-written file behind, and `check_writable` runs before any long
work so a bad output path fails in the first second, not after training.
An output made of several files (an adapter's .safetensors + .json, a PEFT
directory, E2E's generations + scores) goes through `atomic_write_group`: all
or none of its files land, and a full disk is one line saying what was kept.
"""
from __future__ import annotations

import errno
import os
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

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


def check_output_dir(directory: Optional[str], flag: str, what: str, first_file: str):
    """Before any work: `directory` is, or can be created as, a writable directory that will
    hold `what` (its `first_file` probed when the directory exists).  None passes."""
    if not directory:
        return
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise MinillamaError(f"{flag}: {directory} is a file; give a directory to write {what} into")
    check_writable(os.path.join(directory, first_file) if os.path.isdir(directory) else directory.rstrip("/"), flag)


def check_all_writable(paths: Dict[str, Optional[str]]):
    """check_writable for every {flag: path} (None paths are outputs not asked for)."""
    for flag, path in paths.items():
        check_writable(path, flag)


def _new_file_mode() -> int:
    """The permissions open() gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_file(path: str, data: Union[str, bytes]):
    """Write `data` (text as UTF-8) to `path`: what every in-memory output goes through."""
    with open(path, "w", encoding="utf-8") if isinstance(data, str) else open(path, "wb") as f:
        f.write(data)


def contents(data: Union[str, bytes]) -> Callable[[str], None]:
    """A writer for atomic_write / atomic_write_group: `data` written to the path it is given."""
    return lambda tmp: write_file(tmp, data)


# Outputs this run has written (in order), so that a full disk can say what was kept.
_WRITTEN: List[str] = []
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def start_run():
    """Forget the outputs of an earlier run in this process (the CLI calls it first)."""
    _WRITTEN.clear()


def written_outputs() -> List[str]:
    return list(_WRITTEN)


class DiskFull(MinillamaError):
    """A full disk (or quota) while writing an output: the one line says what was kept."""


def disk_full(paths: Sequence[str], cleaned: bool = True) -> MinillamaError:
    """The one line for a full disk (or quota) while writing the files of one output;
    cleaned: their temporary files are gone (atomic_write_group), so nothing of them landed."""
    named = " and ".join(paths)
    older = [p for p in paths if os.path.exists(p)]
    kept = [p for p in _WRITTEN if p not in paths]
    done = ("it was not" if len(paths) == 1 else "none of them was") + " written and no partial file remains"
    return DiskFull(
        f"no space left on device writing {named}" + (f": {done}" if cleaned else "")
        + (f" (the older {' and '.join(older)} untouched)" if cleaned and older else "")
        + (f"; kept from this run: {', '.join(kept)}" if kept else "; this run had written nothing else")
        + "; free some space and run again")


def atomic_write_group(writes: Sequence[Tuple[str, Callable[[str], None]]]):
    """Write several files as one output, [(path, write), ...]: each write(tmp_path) to a
    temporary file first, then every rename, in order (put last the file that makes the
    output usable: an adapter's JSON).  On any failure every temporary file is removed and
    no path is touched; a full disk is one MinillamaError naming what was kept.
    Under torchrun only rank 0 writes (distributed.py: every rank holds the same result),
    and every rank waits until it has, so all of them can read the files afterwards."""
    if not is_main():
        return barrier()
    paths = [path for path, _ in writes]
    tmps: List[str] = []
    try:
        for path, write in writes:
            check_writable(path)
            tmps.append(f"{path}.tmp{os.getpid()}")
            write(tmps[-1])
            os.chmod(tmps[-1], _new_file_mode())  # some writers (safetensors) create their files 0600
        for path, tmp in zip(paths, tmps):  # renames take no space: once here, every file lands
            os.replace(tmp, path)
            if path not in _WRITTEN:
                _WRITTEN.append(path)
    except OSError as e:
        if e.errno in DISK_FULL:
            for tmp in tmps:  # before the message, which looks for older copies
                if os.path.exists(tmp):
                    os.remove(tmp)
            raise disk_full(paths) from None
        raise
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
        barrier()


def atomic_write(path: str, write: Callable[[str], None]):
    """Call write(tmp_path) to produce the file, then rename it to `path`.
    On any failure the temporary file is removed and `path` is untouched."""
    atomic_write_group([(path, write)])


def atomic_write_text(path: str, text: str):
    """Write a UTF-8 text file atomically."""
    atomic_write(path, contents(text))


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
