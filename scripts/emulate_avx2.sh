#!/bin/sh
# Runs a command as it would run on a CPU with AVX2 and FMA but no AVX-512 and no native bf16
# (the other kind of machine this project runs on), to find portability bugs on an AVX-512 one:
#   unshare -m scripts/emulate_avx2.sh python -m pytest
# rag's own choices read /proc/cpuinfo, so a copy without the AVX-512 and AMX flags is mounted
# over it (in a private mount namespace: `unshare -m`, as root); each runtime's kernels are
# capped to AVX2 by its own variable (OpenVINO, oneDNN, torch, FAISS). ONNX Runtime has no such
# cap. The cores, caches and memory are still this machine's: timings are a pointer, not a
# measurement of an AVX2 machine.
set -e
# The real flags, for benchmarks to say that their record was emulated (benchmarks/benchmark_record.py).
RAG_EMULATED_AVX2_ON=$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)
export RAG_EMULATED_AVX2_ON
flags=$(mktemp)
sed -E 's/ (avx512[a-z0-9_]*|amx[a-z0-9_]*)//g' /proc/cpuinfo > "$flags"
mount --bind "$flags" /proc/cpuinfo
export ONEDNN_MAX_CPU_ISA=AVX2 OV_CPU_MAX_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 FAISS_OPT_LEVEL=avx2
exec "$@"
