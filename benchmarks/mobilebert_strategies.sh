#!/usr/bin/env bash
# MobileBERT at equal training time: the three layer-wise transfer strategies, NoNorm + ReLU
# against LayerNorm + GELU, and the main job's 3-layer cut, trained one after another for
# MINUTES minutes each (default 30) on the main job's corpus, then scored side by side by
# one `distilkit compare` (STS-B dev, SST-2 probe, throughput timed together, the full dev
# suite). Each run resumes if interrupted (rerun the same command); finished runs are kept.
#
#   MINUTES=30 bash benchmarks/mobilebert_strategies.sh [OUT]
#
# Five runs of MINUTES plus evaluation: about 3 hours at 30 minutes on a 2-core CPU.
# PYTHON picks the Python environment with distilkit installed (default: python);
# BUDGET_SECONDS overrides MINUTES and QUICK=1 makes the comparison `compare --quick`
# (both for a smoke test).
set -euo pipefail
OUT=${1:-runs/mobilebert-strategies}
PYTHON=${PYTHON:-python}
MINUTES=${MINUTES:-30}
BUDGET=${BUDGET_SECONDS:-$(( MINUTES * 60 ))}
QUICK_FLAG=()
if [ "${QUICK:-0}" = 1 ]; then QUICK_FLAG=(--quick); fi
mkdir -p "$OUT"
train() {  # NAME, then distill's flags
  local name=$1; shift
  if [ -d "$OUT/$name/student" ]; then echo "reusing $OUT/$name/student"; return; fi
  "$PYTHON" -m distilkit distill --time-budget "$BUDGET" --max-steps 1000000 --no-eval \
    --no-progress --out "$OUT/$name" "$@"
}
MB=(--student-architecture mobilebert --lr 1e-3)
train mb-progressive "${MB[@]}" --transfer progressive
train mb-joint "${MB[@]}" --transfer joint
train mb-auxiliary "${MB[@]}" --transfer auxiliary
train mb-joint-layernorm-gelu "${MB[@]}" --transfer joint --norm layernorm --act gelu
train cut3 --num-layers 3
"$PYTHON" -m distilkit compare all-MiniLM-L6-v2 "$OUT/cut3/student" "$OUT/mb-progressive/student" \
  "$OUT/mb-joint/student" "$OUT/mb-auxiliary/student" "$OUT/mb-joint-layernorm-gelu/student" \
  "${QUICK_FLAG[@]}" --no-progress --json "$OUT/compare.json"
