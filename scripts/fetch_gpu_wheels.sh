#!/usr/bin/env bash
# Download, here, the wheels that scripts/gpu_check.sh installs on a lent GPU machine (Python 3.12, x86-64,
# no network there): our pinned transformers and what it needs beyond that image, peft, and bitsandbytes for QLoRA.
# Versions come from requirements.txt. The folder .whl/ is ignored by git and carried by the device tool.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -E "^$1==" requirements.txt; }
mkdir -p .whl
# The image already has huggingface-hub 1.33 and tokenizers 0.23.2, which transformers 5.24 accepts.
for req in "$(pin transformers)" "$(pin peft)" "$(pin bitsandbytes)" "$(pin rapidfuzz)"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform any -d .whl "$req"
done
du -ch .whl/*.whl
