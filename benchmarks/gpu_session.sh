#!/usr/bin/env bash
# The GPU checks of one session on one GPU, in priority order, each stage under its own time limit:
#
#   OUT=/tmp/gpu_out bash benchmarks/gpu_session.sh [stage ...]     # from the repository root
#
# Stages (default: all, in this order):
#   env        GPU, driver and package versions
#   tests      the GPU-marked tests (cuDNN attention vs the float64 / explicit references)
#   smoke      the README's main job (digits, NesT) on the GPU
#   profile    the ViT-B/16 step at batch 256 under jax.profiler: busy fraction and top kernels
#              (benchmarks/trace_summary.py); the Perfetto trace is copied to $OUT
#   vit        benchmarks/gpu_train.py, DeiT-S and ViT-B/16 at batch 256, nest_jax vs timm + compile
#   nest_base  the same for NesT-B at batch 128
#   nest_tiny  the same for NesT-T at batch 256
#   attn       ViT-B/16 and NesT-B steps with attn_impl xla and explicit (cuDNN is in vit / nest_base)
#   augment    benchmarks/device_augment.py at batch 256 (device augmentation's cost in the DeiT-S step)
#   max_batch  the largest batch of ViT-L/16 and NesT-B, with and without remat
# Everything is printed and logged to $OUT/session.log; each benchmark writes its JSON into $OUT.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX takes GPU memory as it needs it
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # nest_jax from this checkout, installed or not
PY=${PYTHON:-python3}
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(env tests smoke profile vit nest_base nest_tiny attn augment max_batch)

run_stage() {
  local limit=$1
  shift
  timeout --kill-after=10 "$limit" "$@"
}

for stage in "${stages[@]}"; do
  echo "=== $stage start $(date -u +%T)"
  case $stage in
    env)
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
      $PY -c "import sys, jax, flax, optax, orbax.checkpoint as o, torch, timm; print(sys.version.split()[0], \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__, \
'torch', torch.__version__, 'timm', timm.__version__, jax.devices())"
      ;;
    tests)
      JAX_PLATFORMS=cuda XLA_FLAGS= run_stage 180 $PY -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/test_attention_gpu.py
      ;;
    smoke)
      rm -rf /tmp/gpu_digits
      run_stage 180 $PY -m nest_jax.main --config=configs/digits_nest_tiny.py --workdir=/tmp/gpu_digits 2>&1 |
        grep -E "steps/s|evaluation|done:|final metrics|Error|error" | tail -12
      ;;
    profile)
      rm -rf /tmp/gpu_profile
      run_stage 240 $PY benchmarks/gpu_train.py --cases vit_b16 --batch 256 --no-timm --steps 10 \
        --profile /tmp/gpu_profile --json "$OUT/gpu_train_profile.json"
      cp "$(find /tmp/gpu_profile -name perfetto_trace.json.gz | head -1)" "$OUT/perfetto_vit_b16.json.gz"
      ;;
    vit)
      run_stage 420 $PY benchmarks/gpu_train.py --cases deit_small vit_b16 --batch 256 --json "$OUT/gpu_train_vit.json"
      ;;
    nest_base)
      run_stage 300 $PY benchmarks/gpu_train.py --cases nest_base --batch 128 --json "$OUT/gpu_train_nest_base.json"
      ;;
    nest_tiny)
      run_stage 240 $PY benchmarks/gpu_train.py --cases nest_tiny --batch 256 --json "$OUT/gpu_train_nest_tiny.json"
      ;;
    attn)
      for impl in xla explicit; do  # at the batches of the vit and nest_base stages
        run_stage 100 $PY benchmarks/gpu_train.py --cases vit_b16 --batch 256 --no-timm --attn-impl $impl \
          --json "$OUT/gpu_train_attn_${impl}_vit_b16.json"
        run_stage 100 $PY benchmarks/gpu_train.py --cases nest_base --batch 128 --no-timm --attn-impl $impl \
          --json "$OUT/gpu_train_attn_${impl}_nest_base.json"
      done
      ;;
    augment)
      run_stage 240 $PY benchmarks/device_augment.py --batch 256 --step-batch 256 --stages --json "$OUT/device_augment.json"
      ;;
    max_batch)
      run_stage 600 $PY benchmarks/gpu_train.py --cases deit_small --no-timm --max-batch --json "$OUT/gpu_train_max_batch.json"
      ;;
    *)
      echo "unknown stage $stage" >&2
      ;;
  esac
  echo "=== $stage end rc=$? $(date -u +%T)"
done 2>&1 | tee -a "$OUT/session.log"
