#!/usr/bin/env bash
# One short run on a machine with a CUDA GPU: what the GPU table and TRITON_VERIFIED_ON_CUDA need.
#   OUT=results bash scripts/gpu_check.sh        (or: make gpu-check OUT=results)
# Runs, each under its own time limit so that a slow step leaves the others their time:
#   1. the ops and engine tests on CUDA tensors (the real kernels; the sm_90 compile test left out),
#   2. python -m pansynth.ops._triton.check --quick (errors of every kernel against float64),
#   3. python -m pansynth.bench --device cuda --quick (the CUDA rows: stages, upsampling, generator),
# with the machine's description, and writes everything under $OUT (default gpu_out/). Uses the
# Python that has torch and triton ($PYTHON, default .venv/bin/python, else python3) on this checkout.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

step() {  # step NAME SECONDS COMMAND...: output to $OUT/NAME.txt, exit status appended
    local name=$1 seconds=$2
    shift 2
    echo "== $name (limit ${seconds}s): $*"
    timeout "$seconds" "$@" >"$OUT/$name.txt" 2>&1
    local status=$?
    echo "exit status $status" >>"$OUT/$name.txt"
    echo "   exit status $status"
}

step machine 60 sh -c "nvidia-smi; $PY -c 'import torch, triton; print(\"torch\", torch.__version__, \"triton\", triton.__version__, torch.cuda.get_device_name(0))'"
step tests "${TESTS_SECONDS:-300}" "$PY" -m pytest tests/ops tests/models/test_models_generator_engine.py -q -x \
    -p no:cacheprovider --deselect tests/ops/test_ops_report.py::test_every_kernel_dtype_and_configuration_compiles_for_sm90
step check "${CHECK_SECONDS:-120}" "$PY" -m pansynth.ops._triton.check --quick
step bench "${BENCH_SECONDS:-240}" "$PY" -m pansynth.bench --device cuda --quick --rows conv,upsample,generator \
    --json "$OUT/bench.json"
echo "results in $OUT/"
