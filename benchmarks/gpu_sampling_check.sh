#!/usr/bin/env bash
# GPU sampling benchmark (for a CUDA machine; not run on the CPU development machine).
# GPT-B and GPT-L, 8 images x 16x16 tokens, CFG 2.0, bf16, compiled decode step; ours with the static KV cache
# against ours recomputing the prefix (estimate from 16 timed steps) and, when LlamaGen's three files are present
# (LLAMAGEN_REPO, default shared/llamagen_official: autoregressive/models/{gpt,generate}.py, utils/drop_path.py),
# LlamaGen's own sampler. Writes $OUT/results_sampling_gpu.md and $OUT/bench_sampling_gpu.log.
# Budget: under 8 minutes on one H100 (the hard timeout below stops it at 7.5 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs}"
mkdir -p "$OUT"
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
LLAMAGEN_REPO="${LLAMAGEN_REPO:-shared/llamagen_official}"
extra=()
if [ -f "$LLAMAGEN_REPO/autoregressive/models/gpt.py" ] && [ -f "$LLAMAGEN_REPO/autoregressive/models/generate.py" ] \
    && [ -f "$LLAMAGEN_REPO/utils/drop_path.py" ]; then
    extra=(--llamagen-repo "$LLAMAGEN_REPO")
else
    echo "LlamaGen's files not found under $LLAMAGEN_REPO: running without the LlamaGen contender" >&2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 450 "$PY" benchmarks/bench_sampling.py --models GPT-B,GPT-L --batch 8 --grid 16 --dtype bf16 --compile \
    --repeats 2 --recompute-steps 16 --wait-idle 0 "${extra[@]}" \
    --output "$OUT/results_sampling_gpu.md" 2>&1 | tee "$OUT/bench_sampling_gpu.log"
