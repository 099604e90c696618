#!/usr/bin/env bash
# MobileBERT at equal training time: the three layer-wise transfer strategies, NoNorm + ReLU
# against LayerNorm + GELU, a second seed of the joint strategy (the spread any difference
# must beat), and the main job's 3-layer cut, each trained for MINUTES minutes (default 30)
# on the main job's corpus, then scored side by side by one `distilkit compare` (STS-B dev,
# SST-2 probe, throughput timed together, the full dev suite). Each run resumes if
# interrupted (rerun the same command); finished runs are kept.
#
#   MINUTES=30 LANES=2 bash benchmarks/mobilebert_strategies.sh [OUT]
#
# LANES=1 (default) trains the six runs one after another with every core; LANES=2 trains
# them two at a time, one thread each, so every run shares the machine the same way (three
# slots: about 1.5 hours of training at 30 minutes, then the comparison).
# PYTHON picks the Python environment with distilkit installed (default: python);
# BUDGET_SECONDS overrides MINUTES and QUICK=1 makes the comparison `compare --quick`
# (both for a smoke test).
set -euo pipefail
OUT=${1:-runs/mobilebert-strategies}
PYTHON=${PYTHON:-python}
MINUTES=${MINUTES:-30}
BUDGET=${BUDGET_SECONDS:-$(( MINUTES * 60 ))}
LANES=${LANES:-1}
QUICK_FLAG=()
if [ "${QUICK:-0}" = 1 ]; then QUICK_FLAG=(--quick); fi
mkdir -p "$OUT"
train() {  # NAME, then distill's flags
  local name=$1; shift
  if [ -d "$OUT/$name/student" ]; then echo "reusing $OUT/$name/student"; return; fi
  "$PYTHON" -m distilkit distill --time-budget "$BUDGET" --max-steps 1000000 --no-eval \
    --no-progress --out "$OUT/$name" "$@"
}
pair() {  # two runs, each as "NAME FLAGS...": side by side on one thread each, or in turn
  local first=$1 second=$2
  if [ "$LANES" = 2 ]; then
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 train $first > "$OUT/lane1.log" 2>&1 &
    local pid=$!
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 train $second > "$OUT/lane2.log" 2>&1 || {
      cat "$OUT/lane2.log"; wait "$pid" || true; exit 1; }
    wait "$pid" || { cat "$OUT/lane1.log"; exit 1; }
    cat "$OUT/lane1.log" "$OUT/lane2.log"
  else
    # shellcheck disable=SC2086
    train $first
    # shellcheck disable=SC2086
    train $second
  fi
}
MB="--student-architecture mobilebert --lr 1e-3"
pair "mb-progressive $MB --transfer progressive" "mb-joint $MB --transfer joint"
pair "mb-auxiliary $MB --transfer auxiliary" \
  "mb-joint-layernorm-gelu $MB --transfer joint --norm layernorm --act gelu"
pair "cut3 --num-layers 3" "mb-joint-seed1 $MB --transfer joint --seed 1"
"$PYTHON" -m distilkit compare all-MiniLM-L6-v2 "$OUT/cut3/student" "$OUT/mb-progressive/student" \
  "$OUT/mb-joint/student" "$OUT/mb-joint-seed1/student" "$OUT/mb-auxiliary/student" \
  "$OUT/mb-joint-layernorm-gelu/student" "${QUICK_FLAG[@]}" --no-progress --json "$OUT/compare.json"
