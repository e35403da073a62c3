#!/usr/bin/env bash
# Retrain every shipped model from scratch with the project's own CLI (Fashion-MNIST from Debian's package).
# Same backbone, epochs, optimiser and augmentation for every method. EPOCHS and SEEDS can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-15}
SEEDS=${SEEDS:-0}
OUT=${OUT:-assets/models}
COMMON="--dataset fashion-mnist --model compact_cnn --epochs $EPOCHS --threads ${THREADS:-2} --channels-last --quiet"
for seed in $SEEDS; do
  sfx=$([ "$seed" = 0 ] && echo "" || echo "_s$seed")
  $PY -m aep_core train $COMMON --seed "$seed" --method aep --weighting hybrid --out "$OUT/aep_hybrid$sfx.pt"
  $PY -m aep_core train $COMMON --seed "$seed" --method baseline --out "$OUT/baseline$sfx.pt"
  $PY -m aep_core train $COMMON --seed "$seed" --method eenet --lambda 1.0 --out "$OUT/eenet_l1$sfx.pt"
  if [ -n "${FULL:-}" ]; then
    for w in uniform linear geometric cost learned; do
      $PY -m aep_core train $COMMON --seed "$seed" --method aep --weighting $w --out "$OUT/aep_$w$sfx.pt"
    done
    for lam in 0.5 2.0; do
      $PY -m aep_core train $COMMON --seed "$seed" --method eenet --lambda $lam --out "$OUT/eenet_l${lam/./}$sfx.pt"
    done
    $PY -m aep_core train $COMMON --seed "$seed" --method distillation --out "$OUT/distillation$sfx.pt"
  fi
done
