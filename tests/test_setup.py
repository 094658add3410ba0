"""setup.sh's asset fetching without a network: sourced in a copy of the script with its own
assets.tsv and a stub `curl` on PATH (nothing is downloaded, .venv is never touched).
Without a network one attempt is made and one line says why; the final error names the
network, not the mirror, when the mirror holds every file it can hold."""
import hashlib
import os
import shutil
import subprocess

import pytest

from conftest import REPO_ROOT

STUB_CURL = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
url="${@: -1}" host="${url#*://}" host="${host%%/*}"
if [[ "$STUB_NET" == down ]]; then echo "curl: (6) Could not resolve host: $host" >&2; exit 6; fi
for a; do [[ "$a" == -I ]] && exit 0; done   # the network is up ...
echo "curl: (22) The requested URL returned error: 404" >&2; exit 22   # ... but the file is gone
"""
STUB_HF = """#!/usr/bin/env bash
echo "hf $*" >> "$STUB_LOG"; exit 1
"""


@pytest.fixture
def copy(tmp_path):
    """A directory holding setup.sh, a bin/ of stubs and a log of their calls."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(os.path.join(REPO_ROOT, "setup.sh"), repo / "setup.sh")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, text in (("curl", STUB_CURL), ("hf", STUB_HF)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    return repo


def run_setup(repo, assets, steps, net, **env):
    """Source setup.sh in `repo` with `assets` as its assets.tsv, run `steps` (its functions)."""
    (repo / "assets.tsv").write_text("".join("\t".join(row) + "\n" for row in assets))
    log = repo.parent / "calls.log"
    env = dict({k: v for k, v in os.environ.items() if not k.startswith("MINILLAMA_")},
               PATH=f"{repo.parent / 'bin'}:{os.environ['PATH']}", STUB_LOG=str(log), STUB_NET=net, **env)
    proc = subprocess.run(["bash", "-c", f'source ./setup.sh && mkdir -p "$STAGE" && {steps}'], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


STORIES = ["stories42M.pt", "-", "llama2c/stories42M.pt",
           "https://www.cs.cmu.edu/~vijayv/stories42M.pt https://huggingface.co/karpathy/tinyllamas/x.pt"]
REQUIRED = ["data/a.txt", "0" * 64, "coursework/a.txt", "https://raw.example.org/a.txt https://mirror.example.org/a.txt"]


def test_without_a_network_one_attempt_and_one_line_say_why(copy):
    proc, calls = run_setup(copy, [STORIES, REQUIRED], "fetch_all; report_failed", net="down")
    assert proc.returncode == 1
    assert calls == ["-sS -I -o /dev/null --connect-timeout 15 --max-time 30 https://www.cs.cmu.edu/~vijayv/stories42M.pt"]
    err = proc.stderr.splitlines()
    assert [line for line in err if "network" in line] == [
        "[setup] WARNING: no network (curl: (6) Could not resolve host: www.cs.cmu.edu): no download is tried this run",
        "[setup] ERROR: required asset(s) above could not be downloaded: no network (curl: (6) Could not resolve "
        "host: www.cs.cmu.edu). Re-run setup.sh with a network, or set MINILLAMA_MIRROR=/path/to/assets-mirror "
        "to copy the files of assets.tsv."]
    assert "[setup] MISSING: data/a.txt  (mirror path: coursework/a.txt; origins: https://raw.example.org/a.txt "\
           "https://mirror.example.org/a.txt)" in err
    assert not (copy / "data").exists() and not (copy / "stories42M.pt").exists()


def test_llama32_with_a_complete_mirror_and_no_network_blames_the_network_not_the_mirror(copy, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "coursework").mkdir(parents=True)
    (mirror / "coursework" / "a.txt").write_text("a\n")
    row = [REQUIRED[0], hashlib.sha256(b"a\n").hexdigest(), *REQUIRED[2:]]
    proc, calls = run_setup(copy, [row], "fetch_all; fetch_llama32; report_failed", net="down",
                            MINILLAMA_MIRROR=str(mirror), MINILLAMA_LLAMA32="1")
    assert proc.returncode == 1 and (copy / "data" / "a.txt").read_text() == "a\n"
    assert calls == ["-sS -I -o /dev/null --connect-timeout 15 --max-time 30 "
                     "https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct"]  # hf itself never ran
    err = proc.stderr.splitlines()
    assert "mirror" not in proc.stderr
    assert err[-1] == ("[setup] ERROR: required asset(s) above could not be downloaded: no network (curl: (6) "
                       "Could not resolve host: huggingface.co). Re-run setup.sh with a network.")
    assert err[-2].startswith("[setup] MISSING: assets/Llama-3.2-1B-Instruct  (not downloaded: no network "
                              "(curl: (6) Could not resolve host: huggingface.co); with a network: accept the license")


def test_with_a_network_every_origin_is_tried_and_a_missing_file_is_not_called_no_network(copy):
    proc, calls = run_setup(copy, [REQUIRED], "fetch_all; report_failed", net="up")
    assert proc.returncode == 1
    assert [c.split()[-1] for c in calls] == ["https://raw.example.org/a.txt"] * 2 + ["https://mirror.example.org/a.txt"]
    assert "no network" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == ("[setup] ERROR: required asset(s) above could not be fetched (see the "
                                            "warnings above); re-run setup.sh, or set "
                                            "MINILLAMA_MIRROR=/path/to/assets-mirror to copy them instead.")
