#!/usr/bin/env bash
# The GPU check: the numerical tests on the GPU, then speed.py at D=64 and 256 for maf_jax,
# flowjax and zuko, in under 8 minutes on one GPU; the tables go to
# benchmarks/results/gpu_check.md.
#
#   bash benchmarks/gpu_check.sh --download   # where pip reaches a registry: the peers as
#                                             # wheels in .whl/ (add /.whl/ to .git/info/exclude)
#   bash benchmarks/gpu_check.sh              # on the GPU machine, with .whl/ beside it
#
# The GPU machine may reach no registry: maf_jax runs from this checkout, the peers from
# the wheels (their own needs, equinox, lineax, torch and the like, ship with the image).
set -uo pipefail
cd "$(dirname "$0")/.."
# the peers, and the tests' hypothesis (which the image may lack)
PEERS="flowjax==19.1.2 paramax==0.0.5 zuko==1.6.0 hypothesis==6.170.17 sortedcontainers==2.4.0"
if [ "${1:-}" = "--download" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --platform any -d .whl $PEERS
  exit
fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site .whl/*.whl
export PYTHONPATH="/tmp/gpu-check-site:$PWD" XLA_PYTHON_CLIENT_PREALLOCATE=false
export MAF_JAX_COMPILATION_CACHE=off
out=benchmarks/results/gpu_check.md
{
  echo "# benchmarks/gpu_check.sh at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
  echo '```'
  echo
  echo "## Tests of the numerics (default settings, no XLA flags), one process per file"
  echo
  echo '```'
  # one process each: a compiler abort in one file does not hide the others
  for file in bijections pallas implicit flows spline incremental; do
    timeout 60 python3 -m pytest -q -p no:cacheprovider "tests/test_$file.py" 2>&1 | tail -4
    echo "tests/test_$file.py: pytest exit status ${PIPESTATUS[0]}"
  done
  echo '```'
  echo
  echo "## speed.py --features 64 256 --libraries maf_jax flowjax zuko --repeat 5"
  echo
  timeout 200 python3 benchmarks/speed.py --features 64 256 --libraries maf_jax flowjax zuko \
    --repeat 5 --out /tmp/gpu-check-speed > /tmp/gpu-check-speed.log 2>&1
  cat /tmp/gpu-check-speed/speed.md 2>/dev/null || tail -20 /tmp/gpu-check-speed.log
  echo
  echo "## The Pallas inverse against the incremental one, D=64 and 256, 4096 rows"
  echo
  timeout 60 python3 benchmarks/inverse_sweep.py --features 64 256 --blocks 0 --groups 4 1 \
    --chunks 0 --pallas 2>&1 | tail -12
} > "$out" 2>&1
cat "$out"
