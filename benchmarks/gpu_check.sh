#!/usr/bin/env bash
# The GPU checks of issue 23 in one run of a few minutes, on a machine with an NVIDIA GPU and CuPy
# (docs/gpu.md says what each part prints):
#
#   bash benchmarks/gpu_check.sh                 # logs and JSON in a fresh temporary folder
#   OUT=/some/folder bash benchmarks/gpu_check.sh
#
# 1. the GPU tests: tests/test_gpu.py, test_gpu_loop.py and test_flat_adam.py (their requires_gpu
#    tests run here, and skip everywhere else);
# 2. benchmarks/gpu_launches.py: kernels, reads from the device, copies to it and milliseconds
#    per training step at batch 32, in the per-step loop (before) and the deferred loop (after);
# 3. benchmarks/train_epoch.py on 12,000 images at batch 32, 128 and 512: seconds per epoch,
#    tinycnn against PyTorch on the same GPU.
# Each part runs even when one before it fails; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! "$python" -c "import cupy, sys; n = cupy.cuda.runtime.getDeviceCount(); print(f'CuPy {cupy.__version__}, {n} CUDA device(s)'); sys.exit(n == 0)"; then
    echo "gpu_check.sh needs CuPy and a CUDA device; see docs/gpu.md" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
failed=0

echo; echo "== 1/3 the GPU tests"
"$python" -m pytest -q -ra -p no:cacheprovider tests/test_gpu.py tests/test_gpu_loop.py tests/test_flat_adam.py \
    2>&1 | tee "$out/tests.log" || failed=1

echo; echo "== 2/3 kernel launches, reads and copies per training step, before and after"
"$python" benchmarks/gpu_launches.py --batch-size 32 --json "$out/launches.json" 2>&1 | tee "$out/launches.log" || failed=1

echo; echo "== 3/3 seconds per epoch against PyTorch"
"$python" benchmarks/train_epoch.py --device gpu --images 12000 --batch-sizes 32 128 512 \
    --json "$out/train_epoch.json" 2>&1 | tee "$out/train_epoch.log" || failed=1

echo; echo "logs and JSON in $out"
exit $failed
