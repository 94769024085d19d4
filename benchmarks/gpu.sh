#!/usr/bin/env bash
# The GPU benchmark: the model and loss tests on the GPU, then training
# throughput of the seed CNN (DANN), ResNet, BiLSTM and FCOS at 2-3 batch sizes,
# with PyTorch's eager twins (benchmarks/torch_twin.py) on the same GPU.
#
# 1. Where the package registry is reachable (the GPU machine has none), from
#    the repository root:   bash benchmarks/gpu.sh --prepare
#    fills .gpu/ (keep it out of git): .gpu/whl, the wheels for Python 3.12
#    that the GPU image lacks (it has jax, flax, optax, orbax, torch), and
#    .gpu/data, the prepared domains that the rows time.
# 2. On the GPU machine, from the repository root, with .gpu/ carried along:
#        bash benchmarks/gpu.sh OUT_DIR [STAGE...]
#    writes OUT_DIR/throughput_gpu.md (every table), tests.log and env.txt.
#    STAGEs (default: all) pick some of cnn cnn_torch bilstm bilstm_torch resnet
#    fcos fcos_adapt tests, e.g. to remeasure the rows a change touches.
#    Each stage has its own time limit and a failing stage does not stop the
#    others; their limits add up to 9.3 minutes. On the H200 of 2026-11-30
#    the stages but the PyTorch ones took 6 minutes (benchmarks/results/throughput_gpu.md).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--prepare" ]]; then
  set -e
  mkdir -p .gpu/whl
  for wheel in tensorflow-datasets==4.9.10 grain==0.2.18 array_record==0.8.6 mlxtend==0.25.0 \
      pycocotools==2.0.11 dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 \
      tensorflow-metadata==1.21.0 termcolor==3.3.0 toml==0.10.2 \
      googleapis-common-protos==1.76.0 docstring_parser==0.18.0 tensorboardX==2.6.5 \
      importlib_resources==7.1.0 portpicker==1.6.0; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl "$wheel"
  done
  "$PY" -m pip wheel -q --no-deps -w .gpu/whl promise==2.3  # published as source only
  XDOMAIN_DATA_DIR=.gpu/data "$PY" -c "
from xdomain.data import domains
for name in ('digits/mnist', 'digits/uci', 'sentiment/movies', 'sentiment/tweets',
             'detect/digits', 'detect/digits_m'):
  for split in ('train', 'test'):
    domains.load_domain(name, split)"
  rm -rf .gpu/data/downloads
  du -sh .gpu/whl .gpu/data
  exit 0
fi

OUT=${1:?usage: bash benchmarks/gpu.sh OUT_DIR [STAGE...] (or --prepare)}
shift
STAGES=" ${*:-cnn cnn_torch bilstm bilstm_torch resnet fcos fcos_adapt tests} "
mkdir -p "$OUT"
if compgen -G ".gpu/whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/xdomain_site .gpu/whl/*.whl || echo "wheel install failed" >&2
  export PYTHONPATH="/tmp/xdomain_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export XDOMAIN_DATA_DIR=${XDOMAIN_DATA_DIR:-$PWD/.gpu/data}
# Several processes take turns on the GPU: none may hold 75% of it in advance.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1
TABLE="$OUT/throughput_gpu.md"

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import sys, jax, flax, optax; print('python', sys.version.split()[0], 'jax',
jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

stage() {  # stage NAME SECONDS TITLE COMMAND...: appends the command's table or its failure
  local name=$1 seconds=$2 title=$3; shift 3
  [[ "$STAGES" == *" $name "* ]] || return 0
  echo "== $title" | tee -a "$OUT/stages.log"
  local started=$SECONDS
  { echo; echo "### $title"; echo; } >> "$TABLE"
  if timeout "$seconds" "$@" > "$OUT/stage.out" 2>> "$OUT/stages.log"; then
    cat "$OUT/stage.out" >> "$TABLE"
  else
    echo "failed or over ${seconds} s (exit $?); see stages.log" >> "$TABLE"
    cat "$OUT/stage.out" >> "$OUT/stages.log"
  fi
  echo "   $((SECONDS - started)) s" | tee -a "$OUT/stages.log"
}

echo "# Training throughput on $(head -2 "$OUT/env.txt" | tail -1)" > "$TABLE"
stage cnn 75 "seed CNN, DANN, 28x28x1 (xdomain)" \
  "$PY" benchmarks/throughput.py --methods=dann --batch_sizes=64,256,1024
stage cnn_torch 40 "seed CNN, DANN, 28x28x1 (PyTorch eager)" \
  "$PY" benchmarks/torch_twin.py --rows=dann_seed_cnn --batch_sizes=64,256,1024
stage bilstm 110 "BiLSTM, embeddings 128, hidden 128, max_length 40, sentiment (xdomain)" \
  "$PY" benchmarks/throughput.py --flagfile=experiments/sentiment/source_only.flags \
  --overrides=embed_size=128,hidden_size=128,max_length=40 --methods=source_only \
  --batch_sizes=64,256,1024
stage bilstm_torch 30 "BiLSTM, embeddings 128, hidden 128, length 40 (PyTorch eager, cuDNN)" \
  "$PY" benchmarks/torch_twin.py --rows=bilstm --batch_sizes=64,256,1024 --length=40
stage resnet 75 "ResNet, 28x28x1 (xdomain)" \
  "$PY" benchmarks/throughput.py --model=resnet --methods=source_only --batch_sizes=64,256
stage fcos 60 "FCOS, 64x64x3, detect/digits -> detect/digits_m (xdomain)" \
  "$PY" benchmarks/throughput.py --flagfile=experiments/detection/source_only.flags \
  --methods=source_only --batch_sizes=32,128
stage fcos_adapt 80 "FCOS, DANN and mean teacher, batch 32 per domain (xdomain)" \
  "$PY" benchmarks/throughput.py --flagfile=experiments/detection/dann.flags \
  --methods=dann,detection_mean_teacher --batch_sizes=32

# The tests at full float32 precision: by default XLA multiplies float32 on
# this GPU in TF32, which the tests' numpy references (1e-5) do not allow.
if [[ "$STAGES" == *" tests "* ]]; then
  echo "== tests" | tee -a "$OUT/stages.log"
  JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest timeout 90 \
    "$PY" -m pytest -q -n 8 -p no:cacheprovider tests/test_losses_*.py tests/test_models_*.py \
    > "$OUT/tests.log" 2>&1
  echo "tests exit $?: $(tail -1 "$OUT/tests.log")" | tee -a "$OUT/stages.log"
fi
cat "$TABLE"
