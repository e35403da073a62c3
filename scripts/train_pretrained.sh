#!/usr/bin/env bash
# Retrain every shipped model from scratch with the project's own CLI (Fashion-MNIST from Debian's package).
#
# 1. The app's default model, assets/models/aep_hybrid.pt: AEP hybrid weighting, DEFAULT_EPOCHS epochs.
# 2. The comparison set behind docs/RESULTS.md: every method and every registered AEP weighting scheme with the
#    same backbone, exit heads, optimiser, augmentation and EPOCHS epochs. Seed 0 of each goes to assets/models
#    (shipped), other seeds of the headline rows to runs/compare. The 6-epoch AEP hybrid of the comparison set
#    goes to runs/compare too, since the shipped aep_hybrid.pt is the longer-trained default.
# Then `python -m benchmarks.results_table` rebuilds docs/RESULTS.md from the evaluation files.
#
# Overrides: EPOCHS, DEFAULT_EPOCHS, SEEDS (headline seeds), THREADS, ONLY=default|compare.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-6}
DEFAULT_EPOCHS=${DEFAULT_EPOCHS:-30}
SEEDS=${SEEDS:-0 1 2}
SHIP=${SHIP:-assets/models}
RUNS=${RUNS:-runs/compare}
COMMON="--dataset fashion-mnist --model compact_cnn --head-pool 4 --threads ${THREADS:-2} --channels-last --quiet"
mkdir -p "$SHIP" "$RUNS"
# every registered AEP weighting scheme but the headline one gets a comparison row
OTHER_SCHEMES=$($PY -c "from aep_core.training import SCHEMES; print(*(s for s in SCHEMES if s != 'hybrid'))")

train() {  # train <out> <epochs> <seed> <method args...>
  local out=$1 epochs=$2 seed=$3; shift 3
  echo "$(date +%T) training $out"
  $PY -m aep_core train $COMMON --epochs "$epochs" --seed "$seed" "$@" --out "$out"
}
out_for() {  # out_for <name> <seed>: seed 0 is shipped, other seeds stay in runs/
  if [ "$2" = 0 ] && [ "$1" != aep_hybrid ]; then echo "$SHIP/$1.pt"; else echo "$RUNS/${1}_s$2.pt"; fi
}

if [ "${ONLY:-}" != compare ]; then
  train "$SHIP/aep_hybrid.pt" "$DEFAULT_EPOCHS" 0 --method aep --weighting hybrid
fi
if [ "${ONLY:-}" != default ]; then
  for seed in $SEEDS; do  # headline rows
    train "$(out_for baseline "$seed")" "$EPOCHS" "$seed" --method baseline
    train "$(out_for aep_hybrid "$seed")" "$EPOCHS" "$seed" --method aep --weighting hybrid
    train "$(out_for eenet_l05 "$seed")" "$EPOCHS" "$seed" --method eenet --lambda 0.5
    if [ "$seed" = 0 ]; then  # the other rows, one seed
      for w in $OTHER_SCHEMES; do
        train "$(out_for "aep_$w" 0)" "$EPOCHS" 0 --method aep --weighting "$w"
      done
      train "$(out_for eenet_l01 0)" "$EPOCHS" 0 --method eenet --lambda 0.1
      train "$(out_for eenet_l2 0)" "$EPOCHS" 0 --method eenet --lambda 2.0
      train "$(out_for distillation 0)" "$EPOCHS" 0 --method distillation
      train "$(out_for classifier_wise 0)" "$EPOCHS" 0 --method classifier-wise
      train "$(out_for layer_wise 0)" "$EPOCHS" 0 --method layer-wise
    fi
  done
fi
