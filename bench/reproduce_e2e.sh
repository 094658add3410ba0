#!/usr/bin/env bash
# Li & Liang's Table 1 (E2E, upper left) on a GPU: finetune, LoRA and prefix tuning with the
# paper's settings (5 epochs, batch 10, prefix length 10 through a 512-wide MLP, linear lr decay,
# beam 5), each one `run_llama.py --option M --task e2e` on the full E2E training set, then the
# five official test scores (630 MRs) of every run collected into one table.
#
#   bash bench/reproduce_e2e.sh                                    # stories42M.pt + tokenizer.model
#   CKPT=assets/Llama-3.2-1B-Instruct TOK= bash bench/reproduce_e2e.sh   # a Llama 3.2 directory
#
# Needs stories42M.pt and tokenizer.model in the repository root (./setup.sh fetches them), or a
# Llama 3.2 directory (MINILLAMA_LLAMA32=1 ./setup.sh; its tokenizer is found inside, so TOK=),
# and the E2E CSVs in data/e2e/ (./setup.sh; else DATA=../shared/assets/e2e).
# Every setting is a variable:
#   METHODS (finetune lora prefix)  EPOCHS (5)  BATCH (10)  BEAM (5)  PREFIX_LENGTH (10)  PREFIX_HIDDEN (512)
#   LORA_RANK (4)  MAX_TRAIN_ROWS (empty: all 42061)  NORM (rmsnorm: what llama2.c trained; empty: the
#   model's default)  DEVICE (--use_gpu; empty: CPU)  OUT (reproduce-e2e)  ARGS (more run_llama.py flags)
#   LR_FINETUNE, LR_LORA, LR_PREFIX (empty: run_llama.py's default, each method config's lr_for("e2e"), which
#   bench/e2e_accuracy.py chose on the tiny stories260K: a larger model will likely want smaller ones)
# A quick CPU run of the same pipeline, on the tiny stories260K (about 5 minutes on 2 cores):
#   CKPT=../shared/assets/llama2c/stories260K.bin TOK=../shared/assets/llama2c/tok512.model DATA=../shared/assets/e2e \
#     DEVICE= MAX_TRAIN_ROWS=200 EPOCHS=1 ARGS="--max_new_tokens 40" bash bench/reproduce_e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CKPT=${CKPT:-stories42M.pt}
TOK=${TOK-tokenizer.model}
DATA=${DATA:-data/e2e}
METHODS=${METHODS:-finetune lora prefix}
EPOCHS=${EPOCHS:-5}
BATCH=${BATCH:-10}
BEAM=${BEAM:-5}
PREFIX_LENGTH=${PREFIX_LENGTH:-10}
PREFIX_HIDDEN=${PREFIX_HIDDEN:-512}
LORA_RANK=${LORA_RANK:-4}
MAX_TRAIN_ROWS=${MAX_TRAIN_ROWS:-}
NORM=${NORM-rmsnorm}
DEVICE=${DEVICE---use_gpu}
OUT=${OUT:-reproduce-e2e}
ARGS=${ARGS:-}
# What the runs need, checked before any starts (bench/need.sh: one line naming what is missing).
. "$(dirname "$0")/need.sh"
for f in "$CKPT" ${TOK:+"$TOK"} "$DATA/trainset.csv"; do need "$f"; done
mkdir -p "$OUT"
for m in $METHODS; do
  flags=(--option "$m" --task e2e --pretrained-model-path "$CKPT" --epochs "$EPOCHS" --batch_size "$BATCH"
         --beam_size "$BEAM" --train "$DATA/trainset.csv" --dev "$DATA/devset.csv" --test "$DATA/testset_w_refs.csv"
         --test_out "$OUT/$m-test.txt" --scores_out "$OUT/$m-scores.json" --log_jsonl "$OUT/$m-log.jsonl")
  [ -n "$TOK" ] && flags+=(--tokenizer "$TOK")
  [ -n "$NORM" ] && flags+=(--norm "$NORM")
  [ -n "$MAX_TRAIN_ROWS" ] && flags+=(--max_train_rows "$MAX_TRAIN_ROWS")
  case $m in
    lora) flags+=(--lora_rank "$LORA_RANK" --lora_alpha 1.0); lr=${LR_LORA:-} ;;
    prefix) flags+=(--prefix_mode prefix --prefix_length "$PREFIX_LENGTH" --prefix_hidden "$PREFIX_HIDDEN"
                    --save_adapter "$OUT/prefix-adapter"); lr=${LR_PREFIX:-} ;;
    finetune) lr=${LR_FINETUNE:-} ;;
    *) echo "METHODS: unknown method $m (finetune, lora, prefix)" >&2; exit 2 ;;
  esac
  [ -n "$lr" ] && flags+=(--lr "$lr")
  echo "== $m: run_llama.py ${flags[*]} $DEVICE $ARGS"
  set +e
  # shellcheck disable=SC2086  # DEVICE and ARGS are word lists
  "$PY" run_llama.py "${flags[@]}" $DEVICE $ARGS 2>&1 | tee "$OUT/$m.log"
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || { echo "$m failed (exit $status): see $OUT/$m.log" >&2; exit 1; }
done
# One table from the JSON reports (and the epoch times from the run logs).
"$PY" - "$OUT" $METHODS <<'EOF' | tee "$OUT/table.txt"
import json, os, sys
out, methods = sys.argv[1], sys.argv[2:]
names = ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]
print(f"{'method':9s} {'lr':>8s} {'epochs':>6s} {'s/epoch':>8s} " + " ".join(f"{n:>7s}" for n in names))
for m in methods:
    report = json.load(open(os.path.join(out, f"{m}-scores.json")))
    with open(os.path.join(out, f"{m}-log.jsonl")) as f:
        epochs = [r["seconds"] for r in map(json.loads, f) if r["event"] == "epoch"]
    s, c = report["scores"]["test"], report["config"]
    print(f"{m:9s} {c['lr']:8.1e} {len(epochs):6d} {sum(epochs) / len(epochs):8.1f} "
          + " ".join(f"{s[n]:7.4f}" if s.get(n) is not None else f"{'-':>7s}" for n in names))
print(f"model {report['model']}; outputs {out}/<method>-test.txt; for scale, the paper's Table 1 "
      "(GPT-2 medium, 345M): BLEU 0.682 finetune, 0.697 prefix")
EOF
echo "table: $OUT/table.txt"
