#!/usr/bin/env bash
# Run on a lent GPU machine (the device tool), from the repository root, with .whl carried:
#   bash scripts/gpu_bench.sh [bench_gpu.py arguments]
# Installs the carried wheels into /tmp/site, prints what the machine has, then runs every part of
# benchmarks/bench_gpu.py, its JSON and log to $OUT (or benchmarks/results/gpu without $OUT).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, pyarrow, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'pyarrow', pyarrow.__version__, 'numpy', numpy.__version__)"
# Every import the parts need, one line each, so a package the image lacks is named at the top of the log.
for module in pydantic datasets trl deepspeed faiss deita_ray.train.worker deita_ray.select.kept_index; do
  if err=$(python3 -c "import $module" 2>&1); then echo "import $module: ok"
  else echo "import $module: FAILED: $(echo "$err" | tail -1)"; fi
done
python3 benchmarks/bench_gpu.py --out "$out" --work /tmp/bench-gpu "$@" 2>&1 | tee "$out/bench_gpu.log"
