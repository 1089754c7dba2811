#!/usr/bin/env bash
# Gather the wheels a lent GPU machine lacks into .whl/ (git-ignored), for bench_gpu.py there.
#   bash scripts/gpu_wheels.sh          # here, with .venv installed (scripts/setup.sh); ~25 MB, under a minute
# The device image has CUDA torch, transformers, accelerate, numpy, pyarrow and pandas but no pydantic, TRL,
# datasets, FAISS or DeepSpeed (nor some of their needs), and no network. The versions taken are the ones .venv runs, for the device's
# Python 3.12. DeepSpeed is published as a source archive only: its wheel is built here (ops compile
# just in time, so one wheel serves every machine). vLLM and Ray are not carried (vLLM needs its own torch;
# Ray's wheel alone is most of a call's 64 MiB). See the README's GPU section for the device command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl && mkdir -p .whl
pins=()
# xxhash (datasets), einops and msgpack (deepspeed) are not needs of anything in the image either; typing-extensions
# because pydantic 2.14 wants a newer one than the image may have (a newer one breaks nothing).
for name in pydantic pydantic-core annotated-types typing-inspection trl datasets dill multiprocess xxhash faiss-cpu \
    hjson einops msgpack typing-extensions; do
  pins+=("$name==$(version "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl "deepspeed==$(version deepspeed)"
ls -la .whl
du -sh .whl
