#!/usr/bin/env bash
# The course's accuracy table for every classification option on stories42M, on a GPU:
# prompt, finetune, lora and the prefix family (prefix / prompt tuning / P-tuning v2, each
# with a cls head and with the verbalizer), on SST-5 and CFIMDB, SEEDS seeds each
# (dev accuracy mean (std), and SST test accuracy), via bench/accuracy.py.
#
#   bash bench/reproduce_table.sh                 # 5 seeds, the course's settings
#   SEEDS=10 JOBS=4 bash bench/reproduce_table.sh
#
# Needs stories42M.pt and tokenizer.model in the repository root (./setup.sh fetches them)
# and the course data in data/ (else ../shared/assets/coursework). Full training sets.
# DATASETS (default "sst cfimdb") picks the tables; DEVICE (default --use_gpu) and ARGS (more
# bench/accuracy.py flags) make a quick CPU run of the
# same pipeline possible, e.g. on the tiny stories260K:
#   CKPT=assets/stories260K/stories260K.bin TOK=assets/stories260K/tok512.model DEVICE= SEEDS=2 \
#     EPOCHS=1 ARGS="--norm rmsnorm --max_train 200 --max_dev 100 --max_test 100" bash bench/reproduce_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-5}
JOBS=${JOBS:-2}               # runs sharing the GPU at once
EPOCHS=${EPOCHS:-5}           # the course's
CKPT=${CKPT:-stories42M.pt}
TOK=${TOK:-tokenizer.model}
OUT=${OUT:-reproduce-table}
DEVICE=${DEVICE---use_gpu}    # empty: CPU
ARGS=${ARGS:-}
DATASETS=${DATASETS:-sst cfimdb}
# What the runs need, checked before any starts (bench/need.sh: one line naming what is missing).
. "$(dirname "$0")/need.sh"
for f in "$CKPT" "$TOK"; do need "$f"; done
mkdir -p "$OUT"
n_ds=$(wc -w <<< "$DATASETS") i=0
for ds in $DATASETS; do
  i=$((i + 1))
  echo "== table $i of $n_ds: $ds (bench/accuracy.py prints a line as each run begins and ends, with the time left)" >&2
  # shellcheck disable=SC2086  # DEVICE and ARGS are word lists
  "$PY" bench/accuracy.py --checkpoint "$CKPT" --tokenizer "$TOK" --dataset "$ds" $DEVICE $ARGS \
      --seeds "$SEEDS" --epochs "$EPOCHS" --jobs "$JOBS" --with_test \
      --set "finetune:training.lr=2e-5" --set "lora:training.lr=2e-5" \
      --json "$OUT/$ds.json" --keep "$OUT/$ds" | tee "$OUT/$ds-table.txt"
done
for ds in $DATASETS; do echo "table: $OUT/$ds-table.txt"; done
