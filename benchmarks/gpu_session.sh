#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool of this workplace): the GPU figures of benchmarks/RESULTS.md
# and two nuclei training runs (stage 7) side by side, from the repository root:
#
#     bash benchmarks/gpu_session.sh          # results and the two best models under $OUT
#
# The machine has no slide readers or zarr: wheels for them in .whl/ are installed into /tmp/site first (how
# they were fetched: benchmarks/RESULTS.md, "GPU session"). Knobs for a dry run on a CPU: N_TILES, BUDGET
# (training minutes per run), STEPS (per epoch), BATCH, CROP, LOADERS (data workers per run), DEVICE, BENCH=0,
# WHEELS=0, PY, SELF_TILES.
set -u
OUT=${OUT:-/tmp/gpu-session}
N_TILES=${N_TILES:-3000}
BUDGET=${BUDGET:-4.5}
STEPS=${STEPS:-400}
BATCH=${BATCH:-32}
CROP=${CROP:-192}
LOADERS=${LOADERS:-7}
DEVICE=${DEVICE:-cuda}
BENCH=${BENCH:-1}
SELF_TILES=${SELF_TILES:-64}
PY=${PY:-python3}
mkdir -p "$OUT"
WORK=$(mktemp -d)  # this call's tiles and runs: nothing of an earlier call is taken for this one's
trap 'rm -rf "$WORK"' EXIT
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }
export PYTHONUNBUFFERED=1
if [ "${WHEELS:-1}" = 1 ] && [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { log "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
log "start"
{ nvidia-smi -L 2>&1; nproc; $PY -c "import torch, timm, numpy; print('torch', torch.__version__, 'timm', timm.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"; } | tee -a "$OUT/log.txt"
$PY -c "import slidestream.cli, nuclei.train, wsi, tiling, mil" 2>&1 | tail -3 | tee -a "$OUT/log.txt"

if [ "$BENCH" = 1 ]; then
    log "nuclei forward, shipped (stride-2) model"
    timeout 90 $PY -m benchmarks.nuclei --device "$DEVICE" --batch-size 64 --tiles 256 --repeat 5 2>&1 \
        | tail -8 | tee -a "$OUT/bench.txt"
fi

log "render $N_TILES synthetic tiles (seed 7)"
timeout 240 $PY -c "
import os
from nuclei.datasets.synthetic import cached_synthetic_tiles
cached_synthetic_tiles('$WORK/tiles7.npz', $N_TILES, seed=7, workers=os.cpu_count())
" 2>&1 | tail -3 | tee -a "$OUT/log.txt"

# A: the shipped stride-2 architecture, continued; B: heads at stride 1 (the new decoder stage and the heads
# start fresh, everything else from the shipped weights). Same tiles, pseudo-labels, schedule and budget.
train() {
    local name=$1
    shift
    timeout "$(awk "BEGIN{print int($BUDGET*60+150)}")" $PY -m slidestream nuclei train --data synthetic \
        --n-synthetic "$N_TILES" --n-val 32 --tile-cache "$WORK/tiles7.npz" --render-workers 4 \
        --init nuclei/weights --self-train tests/data/CMU-1-Small-Region.svs --self-train-share 0.3 --self-train-tiles "$SELF_TILES" \
        --epochs 1000 --steps-per-epoch "$STEPS" --batch-size "$BATCH" --crop "$CROP" --lr 1e-3 \
        --time-budget "$BUDGET" --workers "$LOADERS" --seed 7 --device "$DEVICE" --amp -o "$WORK/run$name" "$@" \
        > "$WORK/run$name.out" 2> "$WORK/run$name.err"
    echo "run $name exit $?" >> "$WORK/run$name.out"
}
log "train A and B for $BUDGET min each"
train A &
train B --full-resolution --decoder-channels 64 48 32 24 16 &
wait
for name in A B; do
    log "run $name"
    grep -v '^\s*$' "$WORK/run$name.out" | tail -40 | tee -a "$OUT/log.txt"
    grep -i -E "error|traceback" -A3 "$WORK/run$name.err" | tail -20 | tee -a "$OUT/log.txt"
    if grep -q "^run $name exit 0$" "$WORK/run$name.out"; then
        for f in model.safetensors config.json history.json; do
            cp "$WORK/run$name/$f" "$OUT/${name}_$f"
        done
    fi
done

if [ "$BENCH" = 1 ]; then
    if [ -f "$WORK/runB/config.json" ]; then
        log "nuclei forward, stride-1 model (run B)"
        timeout 60 $PY -m benchmarks.nuclei --device "$DEVICE" --batch-size 64 --tiles 256 --repeat 3 \
            --model "$WORK/runB" 2>&1 | tail -6 | tee -a "$OUT/bench.txt"
    fi
    log "MIL training epoch"
    timeout 60 $PY -m benchmarks.mil --device "$DEVICE" --bags 50 --repeats 2 2>&1 | tail -8 | tee -a "$OUT/bench.txt"
    log "encoder features end to end"
    timeout 100 $PY -m benchmarks.features --device "$DEVICE" --encoders resnet50_trunc uni_v1 --tiles 1024 \
        --slide-size 12000 --repeat 2 --data "$WORK/bench-data" 2>&1 | tail -8 | tee -a "$OUT/bench.txt"
fi
log "done"
