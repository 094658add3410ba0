#!/usr/bin/env bash
# minillama setup: one command that
#   1. creates the virtual environment .venv/ (if missing) with `python3 -m venv`,
#   2. installs the pinned requirements (requirements-dev.txt = runtime + test oracles),
#   3. fetches every asset listed in assets.tsv (data, tokenizers, checkpoints) from its
#      public origin -- or copies it from $MINILLAMA_MIRROR when that names a directory
#      laid out like the course mirror (coursework/, e2e/, llama2/, llama2c/, llama3/, mmlu/),
#   4. checks that Java 8+ is on PATH (only the E2E METEOR/ROUGE-L/CIDEr scores need it).
# Every fetched file is checked against its sha256 in assets.tsv; a mismatch stops setup
# with exit code 1 and nothing is written.  Re-running is cheap: files already present
# with the right checksum are skipped, and pip is skipped while the requirements are unchanged.
#
# GPU users: install a CUDA build of torch 2.13.0 into .venv *before* running this
# script; pip then keeps it (torch==2.13.0 matches 2.13.0+cu130 etc.):
#     python3 -m venv .venv
#     .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130
#     bash setup.sh
# (cu130 is PyTorch's stable CUDA line; use cu126 for older drivers.  On Linux x86-64 the
# plain PyPI wheel is already a CUDA 13.0 build; CPU-only users can save the download with
# --index-url https://download.pytorch.org/whl/cpu.)
#
# Environment variables:
#   MINILLAMA_MIRROR=DIR   copy assets from DIR instead of downloading them
#   MINILLAMA_OFFLINE=1    never download assets (those missing from the mirror are reported)
#   MINILLAMA_LLAMA32=1    also download meta-llama/Llama-3.2-1B-Instruct (gated; needs `hf auth login`)
#   MINILLAMA_ADAPTERHUB=1 also build .venv/adapterhub (adapters 1.3.0: the AdapterHub oracle test)
#   PYTHON=python3.11      the interpreter used to create .venv (default: python3)
set -euo pipefail

say()  { flush_fetched; printf '[setup] %s\n' "$*"; }
warn() { flush_fetched; printf '[setup] WARNING: %s\n' "$*" >&2; }
die()  { flush_fetched; printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
# Consecutive files fetched into one folder (e.g. MMLU's 57 CSVs per split) make one line.
RUN_DIR="" RUN_N=0
flush_fetched() { (( RUN_N == 0 )) || printf '[setup] fetched  ... and %s more file(s) into %s/ from the same source\n' "$RUN_N" "$RUN_DIR"; RUN_N=0; }

# Resolve the mirror relative to where the user ran us, before moving to the repo root.
MIRROR=""
if [[ -n "${MINILLAMA_MIRROR:-}" ]]; then
    [[ -d "$MINILLAMA_MIRROR" ]] || die "MINILLAMA_MIRROR=$MINILLAMA_MIRROR is not a directory; point it at a copy of the assets mirror or unset it to download from the public origins."
    MIRROR="$(cd "$MINILLAMA_MIRROR" && pwd)"
fi
OFFLINE="${MINILLAMA_OFFLINE:-0}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$REPO"
VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3}"
LIST=assets.tsv

# Everything in flight (a file being fetched, downloaded archives) lives in STAGE, next to
# the destinations (so the final mv is a rename); it is removed however we exit.
STAGE="$REPO/.setup.part.$$"
trap 'rm -rf -- "$STAGE"' EXIT

FAILED=()      # required assets we could not get (reported at the end, exit 1)
MIRROR_MISSING=0  # 1: one of them is an assets.tsv file (a mirror could have held it)
NOTICES=()     # optional things we skipped (reported at the end, exit 0)
OK=0 GOT=0

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# ---------------------------------------------------------------- 1-2. venv + requirements
setup_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python >= 3.10 (or set PYTHON=/path/to/python3)."
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || die "$PYTHON is $("$PYTHON" -V 2>&1); torch 2.13 needs Python >= 3.10 (set PYTHON=python3.11 or similar)."
        say "creating .venv with $("$PYTHON" -V 2>&1)"
        "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv .venv' failed (Debian/Ubuntu: apt install python3-venv)."
    fi
    local stamp="$VENV/.minillama-requirements.sha256" want
    want="$(cat requirements.txt requirements-dev.txt > "$STAGE/req" && sha256_of "$STAGE/req")"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        say "ok       .venv requirements (unchanged since the last install; delete .venv to reinstall)"
        return 0
    fi
    say "installing requirements-dev.txt into .venv (torch is large: this can take minutes)"
    # --no-compile: byte-compiling all of torch/transformers up front costs about a minute
    # of CPU; Python compiles the modules actually imported on first use instead.
    "$VENV/bin/python" -m pip install --no-compile -r requirements-dev.txt \
        || die "pip install -r requirements-dev.txt failed (see above). For a GPU build of torch, install it first: .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"
    printf '%s\n' "$want" > "$stamp"
}

# The package itself, editable (pyproject.toml): `import minillama` and `python -m minillama.metrics`
# then work from any directory with .venv's python.
install_package() {
    if "$VENV/bin/python" -c 'import importlib.metadata as m, sys; d = m.distribution("minillama"); sys.exit(0 if d.read_text("direct_url.json") and "'"$REPO"'" in d.read_text("direct_url.json") else 1)' 2>/dev/null; then
        say "ok       minillama installed editable from $REPO"
        return 0
    fi
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$REPO" \
        || die "pip install -e . failed (see above): setuptools >= 61 is needed in .venv (.venv/bin/pip install setuptools)"
    say "installed minillama editable from $REPO (import minillama works from any directory)"
}

# ---------------------------------------------------------------- 3. assets
# online URL: may we download, and is there a network?  Asked of URL's host before the
# first download of a run: without a network every download would fail in turn (each with
# its retries), so one line says why and nothing more is tried this run.
NET="" NET_WHY=""   # NET: "" not asked yet, up, or down (NET_WHY: curl's or wget's words)
online() {
    [[ "$OFFLINE" != 1 && "$NET" != down ]] || return 1
    [[ "$NET" != up ]] || return 0
    local rc=0
    if command -v curl >/dev/null 2>&1; then
        curl -sS -I -o /dev/null --connect-timeout 15 --max-time 30 "$1" 2> "$STAGE/net" || rc=$?
        # no proxy, no DNS, no route or connection, timed out: no network (an HTTP answer is one)
        case "$rc" in 5|6|7|28) ;; *) NET=up; return 0 ;; esac
    elif command -v wget >/dev/null 2>&1; then
        wget -q --spider --tries=1 --timeout=15 "$1" 2> "$STAGE/net" || rc=$?
        [[ "$rc" == 4 ]] || { NET=up; return 0; }   # wget's exit code 4: network failure
    else
        NET=up; return 0   # download() says that neither curl nor wget is installed
    fi
    NET=down NET_WHY="$(tail -n 1 "$STAGE/net" | cut -c 1-150)"
    NET_WHY="${NET_WHY:-exit code $rc}"
    warn "no network ($NET_WHY): no download is tried this run"
    return 1
}

# download URL DEST: curl (fallback wget); file:// URLs are copied, even offline.
download() {
    local url="$1" dest="$2"
    if [[ "$url" == file://* ]]; then cp -- "${url#file://}" "$dest"; return; fi
    online "$url" || return 1
    say "  downloading $url"
    if command -v curl >/dev/null 2>&1; then
        local progress=-sS; [[ -t 2 ]] && progress=--progress-bar
        curl -fL --retry 2 --connect-timeout 15 "$progress" -o "$dest" "$url"
    elif command -v wget >/dev/null 2>&1; then
        wget -q --tries=3 --timeout=15 -O "$dest" "$url"
    else
        warn "neither curl nor wget is installed: cannot download $url"; return 1
    fi
}

# archive SPEC: get the archive SPEC (a URL, or pip:NAME==VERSION for a PyPI wheel) and
# unpack it (tar for *.tar*, else zip), once per run; sets ARC to the unpacked folder.
archive() {
    ARC="$STAGE/$(printf %s "$1" | tr -c 'A-Za-z0-9._=-' _)"
    [[ -d "$ARC" ]] && return 0
    [[ -e "$ARC.failed" ]] && return 1
    local f
    mkdir -p "$ARC.dl" "$ARC.x"
    if [[ "$1" == pip:* ]]; then
        online https://pypi.org/simple/ && say "  downloading the wheel ${1#pip:} with pip" \
            && "$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$ARC.dl" "${1#pip:}"
    else
        download "$1" "$ARC.dl/${1##*/}"
    fi && f="$(find "$ARC.dl" -type f | head -n 1)" && [[ -n "$f" ]] && {
        say "  unpacking ${f##*/}"
        if [[ "$f" == *.tar* || "$f" == *.tgz ]]; then tar -xf "$f" -C "$ARC.x"
        else "$VENV/bin/python" -m zipfile -e "$f" "$ARC.x"; fi
    } && rm -rf -- "$ARC.dl" && mv -- "$ARC.x" "$ARC" && return 0
    [[ "$NET" != up ]] || warn "could not get the archive $1"; rm -rf -- "$ARC.dl" "$ARC.x"; touch "$ARC.failed"; return 1
}

fetched() {
    if [[ -n "$RUN_DIR" && "${1%/*}" == "$RUN_DIR" ]]; then RUN_N=$((RUN_N + 1)); return 0; fi
    flush_fetched; RUN_DIR="${1%/*}"; say "fetched  $1  <- $2"
}

# stories42M.pt has no published checksum: it must load as a stories42M-shaped checkpoint.
PT_CHECK='import sys, torch; a = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["model_args"]; s = (a["dim"], a["n_layers"], a["vocab_size"]); sys.exit(None if s == (512, 8, 32000) else f"model_args (dim, n_layers, vocab_size) = {s}, expected (512, 8, 32000)")'

# fetch DEST SHA256 MIRROR_PATH URL...: make DEST exist with that checksum ("-": any).
fetch() {
    local dest="$1" want="$2" rel="$3" tmp="$STAGE/file" src="" url have; shift 3
    if [[ -f "$dest" ]]; then
        if [[ "$want" == - || "$(sha256_of "$dest")" == "$want" ]]; then OK=$((OK + 1)); return 0; fi
        warn "$dest exists but its sha256 is not the expected one; fetching it again"
    fi
    rm -f -- "$tmp"
    if [[ -n "$MIRROR" && "$rel" != - && -f "$MIRROR/$rel" ]]; then
        cp -- "$MIRROR/$rel" "$tmp" && src="$MIRROR/$rel"
    else
        [[ -z "$MIRROR" || "$OFFLINE" == 1 || "$NET" == down ]] || warn "$dest is not in the mirror $MIRROR (as $rel); trying its public origin"
        for url in "$@"; do
            if [[ "$url" == *#* ]]; then
                archive "${url%%#*}" && [[ -f "$ARC/${url#*#}" ]] && cp -- "$ARC/${url#*#}" "$tmp" && src="$url" && break
            elif [[ "$url" != - ]]; then
                download "$url" "$tmp" && src="$url" && break
            fi
            rm -f -- "$tmp"
        done
    fi
    if [[ -z "$src" ]]; then
        rm -f -- "$tmp"
        if [[ "$want" == - ]]; then
            NOTICES+=("optional $dest not fetched (not in the mirror, and offline or unreachable); get it later with: curl -fL -o $dest $1")
            return 0
        fi
        MIRROR_MISSING=1
        if [[ "$1" == *#* ]]; then   # one line per folder of archive members
            FAILED+=("${dest%/*}/  (mirror path: ${rel%/*}/; origin: ${1%%#*})")
        else
            FAILED+=("$dest  (mirror path: $rel; origins: $*)")
        fi
        return 0
    fi
    if [[ "$want" != - ]]; then
        have="$(sha256_of "$tmp")"
        [[ "$have" == "$want" ]] || die "checksum mismatch for $dest from $src: expected sha256 $want, got $have. The source is corrupt or not the published file; replace it (or unset MINILLAMA_MIRROR to download) and re-run setup.sh."
    elif [[ "$dest" == stories42M.pt ]]; then
        "$VENV/bin/python" -c "$PT_CHECK" "$tmp" 2> "$STAGE/err" \
            || die "$dest from $src is not a loadable llama2.c stories42M checkpoint ($(grep -m 1 -E '^([A-Za-z_.]*(Error|Exception)|model_args)' "$STAGE/err" | cut -c 1-150)); nothing was written. Fix or remove that source and re-run setup.sh."
    fi
    mkdir -p "$(dirname "$dest")" && mv -f -- "$tmp" "$dest"
    GOT=$((GOT + 1)); fetched "$dest" "$src"
}

# The one loop: every line of assets.tsv (its header says the format).
fetch_all() {
    [[ -f "$LIST" ]] || die "$LIST not found: it lists the assets to fetch; restore it with 'git checkout -- $LIST'."
    local n dest sum rel urls
    n="$(awk -F'\t' '/^[ \t]*(#|$)/ { next } NF != 4 || $1 ~ /^\/|\.\./ || !($2 == "-" || (length($2) == 64 && $2 !~ /[^0-9a-f]/)) || $3 == "" || $4 == "" { print NR; exit }' "$LIST")"
    [[ -z "$n" ]] || die "$LIST line $n: expected 4 TAB-separated columns DEST SHA256 MIRROR URLS (DEST relative, SHA256 64 hex digits or -, '-' for no mirror path/URL); fix that line."
    while IFS=$'\t' read -r dest sum rel urls <&3 || [[ -n "$dest" ]]; do
        [[ "$dest" =~ ^[[:space:]]*(#|$) ]] && continue
        # shellcheck disable=SC2086  # URLS is a space-separated list
        fetch "$dest" "$sum" "$rel" $urls
    done 3< "$LIST"
    say "ok       $OK asset file(s) already present and correct; $GOT fetched"
    # data/mmlu/SHA256SUMS: the MMLU CSVs' sums, for `cd data/mmlu && sha256sum -c SHA256SUMS`.
    if [[ -d data/mmlu ]]; then
        awk -F'\t' '$1 ~ /^data\/mmlu\/(dev|val|test)\// { print $2 "  " substr($1, 11) }' "$LIST" > "$STAGE/sums"
        cmp -s "$STAGE/sums" data/mmlu/SHA256SUMS || mv -f -- "$STAGE/sums" data/mmlu/SHA256SUMS
    fi
}

# Optional: the gated Llama 3.2 1B Instruct weights via the Hugging Face CLI.
fetch_llama32() {
    local dir=assets/Llama-3.2-1B-Instruct repo=meta-llama/Llama-3.2-1B-Instruct
    if [[ -f "$dir/config.json" && -f "$dir/model.safetensors" ]]; then say "ok       $dir"; return 0; fi
    local how="accept the license at https://huggingface.co/$repo, run '.venv/bin/hf auth login', then 'MINILLAMA_LLAMA32=1 bash setup.sh' (or: .venv/bin/hf download $repo --local-dir $dir)"
    if [[ "${MINILLAMA_LLAMA32:-0}" != 1 ]]; then
        NOTICES+=("optional Llama 3.2 1B Instruct not downloaded (gated): $how")
        return 0
    fi
    local cli="" c
    for c in "$VENV/bin/hf" hf huggingface-cli; do
        if command -v "$c" >/dev/null 2>&1; then cli="$c"; break; fi
    done
    if [[ -z "$cli" ]]; then FAILED+=("$dir  (no 'hf' or 'huggingface-cli' found; pip install huggingface_hub, then: $how)"); return 0; fi
    if ! online "https://huggingface.co/$repo"; then
        local why="MINILLAMA_OFFLINE=1"; [[ "$NET" != down ]] || why="no network ($NET_WHY)"
        FAILED+=("$dir  (not downloaded: $why; with a network: $how)")
        return 0
    fi
    say "downloading $repo with $cli (about 2.5 GB)"
    if "$cli" download "$repo" --local-dir "$dir"; then say "fetched  $dir"
    else FAILED+=("$dir  ($cli download failed; $how)"); fi
}

# ---------------------------------------------------------------- 4. Java (pycocoevalcap)
check_java() {
    local v="" major
    command -v java >/dev/null 2>&1 && v="$(java -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')" || true
    major="${v%%.*}"; [[ "$major" != 1 ]] || { major="${v#1.}"; major="${major%%.*}"; }   # 1.8.0_x = 8
    if [[ "$major" =~ ^[0-9]+$ ]] && (( major >= 8 )); then say "ok       java $v (for the E2E METEOR/ROUGE-L/CIDEr scores)"; return 0; fi
    NOTICES+=("Java 8+ not found on PATH${v:+ (java there is version $v)}; only the E2E METEOR, ROUGE-L and CIDEr scores (pycocoevalcap) need it. Install it, e.g. Debian/Ubuntu: apt-get install -y default-jre-headless (as root), macOS: brew install openjdk; no need to re-run setup.sh.")
}

# The required assets we could not get, and why (exit 1); nothing when all are here.
report_failed() {
    (( ${#FAILED[@]} )) || return 0
    printf '%s\n' "${FAILED[@]}" | awk '!seen[$0]++ { print "[setup] MISSING: " $0 }' >&2
    if [[ -n "$MIRROR" ]] && (( MIRROR_MISSING )); then
        [[ "$NET" != down ]] || die "required asset(s) above are missing from the mirror $MIRROR and there is no network to download them ($NET_WHY): complete the mirror, or re-run setup.sh with a network."
        die "required asset(s) above are missing from the mirror $MIRROR and could not be downloaded; complete the mirror or unset MINILLAMA_MIRROR (and MINILLAMA_OFFLINE) to download them."
    fi
    [[ "$OFFLINE" != 1 ]] || die "required asset(s) above are not present and MINILLAMA_OFFLINE=1 forbids downloading them: unset MINILLAMA_OFFLINE, or set MINILLAMA_MIRROR=/path/to/assets-mirror to copy them."
    local or_mirror=", or set MINILLAMA_MIRROR=/path/to/assets-mirror to copy the files of assets.tsv"
    [[ -z "$MIRROR" ]] || or_mirror=""   # the mirror holds them all: only the network is missing
    [[ "$NET" != down ]] || die "required asset(s) above could not be downloaded: no network ($NET_WHY). Re-run setup.sh with a network$or_mirror."
    die "required asset(s) above could not be fetched (see the warnings above); re-run setup.sh, or set MINILLAMA_MIRROR=/path/to/assets-mirror to copy them instead."
}

# The AdapterHub oracle's own environment (MINILLAMA_ADAPTERHUB=1; .ci/run sets it): adapters 1.3.0
# pins an older transformers than requirements-dev.txt, so it is a venv of its own in .venv/adapterhub/, never installed into .venv itself.
setup_adapterhub_venv() {
    [[ "${MINILLAMA_ADAPTERHUB:-}" == 1 ]] || return 0
    local venv="$REPO/.venv/adapterhub" stamp="$REPO/.venv/adapterhub/.minillama-requirements"
    local want; want="$(cat requirements-adapterhub.txt)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        say "ok       .venv/adapterhub (the AdapterHub oracle's environment)"
        return 0
    fi
    say "installing requirements-adapterhub.txt into .venv/adapterhub (the AdapterHub oracle's environment)"
    "$PYTHON" -m venv "$venv" || die "could not create $venv with $PYTHON"
    "$venv/bin/python" -m pip install --no-compile -q -r requirements-adapterhub.txt \
        || die "pip install -r requirements-adapterhub.txt into .venv/adapterhub failed (see above)"
    printf '%s\n' "$want" > "$stamp"
}

main() {
    say "repository: $REPO"
    if [[ -n "$MIRROR" ]]; then say "assets: copying from MINILLAMA_MIRROR=$MIRROR"
    elif [[ "$OFFLINE" == 1 ]]; then say "assets: MINILLAMA_OFFLINE=1 and no mirror: only checking what is present"
    else say "assets: downloading from their public origins"; fi
    mkdir -p "$STAGE"
    setup_venv
    install_package
    setup_adapterhub_venv
    fetch_all
    fetch_llama32
    check_java
    local n
    for n in ${NOTICES[@]+"${NOTICES[@]}"}; do say "NOTE: $n"; done
    report_failed
    say "done. Try: .venv/bin/python run_llama.py --option generate   |   tests: .venv/bin/python -m pytest -q tests"
}

# Run when executed (`bash setup.sh`); sourcing it only defines the functions (tests/test_setup.py).
[[ "${BASH_SOURCE[0]}" != "$0" ]] || main "$@"
