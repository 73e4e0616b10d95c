#!/usr/bin/env bash
# One-shot GPU check: the real-GPU tests and the GPU rows of the kernel, loader and GAN benches,
# then the rows for bench/RESULTS.md. For whoever first has a GPU (one H100/H200, < 8 minutes).
#
#   bash bench/gpu_check.sh            # from the repository root
#
# Needs: torch with CUDA, numba-cuda, CuPy, OpenCV, pytest, pytest-benchmark. No network, no DALI
# (the DALI rows skip with their reason). The package is installed in place first unless
# SKIP_INSTALL=1 (pip install --no-deps --no-build-isolation -e .). Output: the log on stdout and
# everything under ${OUT:-/tmp/insmix_gpu_check}/ (pytest logs, benchmark JSON, rows.md).
# `bash bench/gpu_check.sh --rows FILE.json` only formats the rows of an earlier run.
# Exit status: 0 when every step passed; otherwise the number of the first step that failed
# (2 = no usable GPU, 3 = install, 4 = GPU tests, 5 = benches, 6 = rows).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/insmix_gpu_check}"
PY="${PYTHON:-python}"
T0=$(date +%s)

step() { printf '\n== [%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { local code=$1; shift; printf '\nGPU CHECK FAILED (exit %s): %s\n' "$code" "$*" >&2; exit "$code"; }

# Markdown rows from a pytest-benchmark JSON (also: bash bench/gpu_check.sh --rows FILE.json).
rows() {
    timeout 60 "$PY" - "$1" <<'PYEOF'
import json, sys
data = json.load(open(sys.argv[1]))
m = data.get("machine_info", {})
print(f"Machine: {m.get('cpu', {}).get('brand_raw', '?')} ({m.get('cpu', {}).get('count', '?')} cores), "
      f"date {data.get('datetime', '?')}, command: bash bench/gpu_check.sh")
print()
print("| bench | case | median | figure | CPU cores busy |")
print("| --- | --- | --- | --- | --- |")
for b in data["benchmarks"]:
    x = b.get("extra_info", {})
    fig = []
    if "crops_per_s" in x:
        rng = x.get("range")
        fig.append(f"{x['crops_per_s']:,.0f} crops/s" + (f" ({rng[0]:,.0f}–{rng[1]:,.0f})" if rng else ""))
    if "wait_fraction" in x:
        fig.append(f"loader wait {100 * x['wait_fraction']:.1f} % of a {x.get('model', '')} step")
    if "ms_per_tile" in x:
        fig.append(f"{x['ms_per_tile']:.3f} ms/tile")
    cores = x.get("cores_busy")
    print(f"| {b['fullname'].split('::')[0].split('/')[-1]} | {b['name']} | {1000 * b['stats']['median']:.1f} ms | "
          f"{'; '.join(fig) or '–'} | {'' if cores is None else f'{cores:.2f}'} |")
PYEOF
}

if [ "${1:-}" = "--rows" ]; then
    rows "${2:?usage: bash bench/gpu_check.sh --rows FILE.json}"
    exit 0
fi
mkdir -p "$OUT"

# -------------------------------------------------------------------------------- 1. a usable GPU?
step "1/6 GPU and software"
command -v "$PY" >/dev/null || fail 2 "no '$PY' on PATH (set PYTHON=...)"
if ! timeout 120 "$PY" - <<'EOF'
import sys
try:
    import torch
except Exception as e:
    sys.exit(f"torch does not import: {e}")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA GPU (torch.version.cuda = {torch.version.cuda})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): "
      f"{torch.cuda.get_device_name(0)}")
for mod in ("numba", "numba_cuda", "cupy", "cv2", "pytest_benchmark"):
    try:
        m = __import__(mod)
        print(f"  {mod} {getattr(m, '__version__', '')}")
    except Exception as e:
        print(f"  {mod}: MISSING ({e})")
try:
    import nvidia.dali as d
    print(f"  nvidia.dali {d.__version__}")
except Exception:
    print("  nvidia.dali: not installed (DALI rows skip)")
EOF
then
    fail 2 "no usable CUDA GPU for torch (see above)"
fi
command -v nvidia-smi >/dev/null && timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc | sed 's/^/CPU cores: /'

# -------------------------------------------------------------------------------- 2. install in place
step "2/6 install the package in place"
if [ "${SKIP_INSTALL:-0}" != "1" ]; then
    timeout 90 "$PY" -m pip install --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1 \
        || { tail -20 "$OUT/pip.log"; fail 3 "pip install --no-deps --no-build-isolation -e . failed ($OUT/pip.log)"; }
fi
timeout 120 "$PY" -c "import insmix_fast, insmix_fast.gpu as g; print(insmix_fast.__file__); ok, why = g.cuda_available(); print('numba.cuda:', why); raise SystemExit(0 if ok else 1)" \
    || fail 3 "insmix_fast imports but its CUDA kernels cannot run (numba-cuda missing or no device)"

# -------------------------------------------------------------------------------- 3. real-GPU tests
step "3/6 real-GPU tests"
set +e
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -ra \
    tests/test_gpu_cuda.py tests/test_gpu_ptx.py \
    tests/test_loader.py tests/test_gan_blender.py tests/test_foundations.py tests/test_transforms_batch.py tests/test_loader_typed.py \
    -k "cuda or gpu or ptx" 2>&1 | tee "$OUT/gpu_tests.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || fail 4 "GPU tests failed or timed out (exit $rc; $OUT/gpu_tests.log)"
if grep -E "^SKIPPED.*(needs a CUDA|no CUDA GPU|no usable CUDA|not installed)" "$OUT/gpu_tests.log" \
        | grep -v -i "dali" >/dev/null; then
    echo "WARNING: some GPU tests skipped on this GPU machine (see the SKIPPED lines above)"
fi

# -------------------------------------------------------------------------------- 4. GPU bench rows
step "4/6 GPU rows of bench_gpu, bench_loader, bench_gan"
set +e
timeout 200 "$PY" -m pytest -q -p no:cacheprovider -s bench/bench_gpu.py bench/bench_loader.py bench/bench_gan.py \
    --benchmark-only -k cuda --benchmark-json="$OUT/gpu_bench.json" --benchmark-columns=min,median,mean,rounds \
    2>&1 | tee "$OUT/gpu_bench.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || fail 5 "GPU benches failed or timed out (exit $rc; $OUT/gpu_bench.log)"

# -------------------------------------------------------------------------------- 5. rows for RESULTS.md
step "5/6 rows for bench/RESULTS.md"
rows "$OUT/gpu_bench.json" | tee "$OUT/rows.md" || fail 6 "could not format the rows"

step "6/6 done in $(( $(date +%s) - T0 )) s; paste $OUT/rows.md into bench/RESULTS.md"
