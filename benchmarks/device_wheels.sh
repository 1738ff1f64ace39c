#!/usr/bin/env bash
# Fill .whl/ with the wheels benchmarks/device_check.sh installs on the GPU machine, which has
# Python 3.12 and no package registry: the releases only Python 3.12+ gets (PyAV 19, Pillow 13),
# and the test references it lacks (Meta's `sam2` 1.1.0 without its CUDA extension, hydra-core
# and what it needs, iopath, pycocotools). About 43 MB; add `/.whl/` to .git/info/exclude and
# name `.whl` in the device tool's `carry`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

rm -rf .whl
mkdir .whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl \
    av==19.0.2 pillow==13.0.0 pycocotools==2.0.11 hydra-core==1.3.8 omegaconf==2.3.1
# Pure-Python projects published as source only: built here, they install anywhere.
python -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 iopath==0.1.10
SAM2_BUILD_CUDA=0 python -m pip wheel -q --no-deps --no-build-isolation -w .whl sam2==1.1.0
ls -l .whl
