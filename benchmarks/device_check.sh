#!/usr/bin/env bash
# gpudp's one-shot check on a GPU machine: device information, the GPU tests of both GPU backends (every test
# module's gpu/cudasim tests: the advection, difference, Poisson and projection operators, MAC advection
# (test_mac.py, test_cupy_mac.py), obstacles (test_obstacles.py), checkpointed rollouts (test_checkpointing.py,
# test_advect_checkpoints.py), ...), the benchmark suite at GPU sizes (with the Poisson-solver comparison,
# benchmarks/cases_solvers.py, on both GPU backends within its own time budget), the long-rollout cases
# (benchmarks/cases_rollout.py: checkpointed against stored rollouts of advect_upwind and of the smoke step, time,
# memory and bitwise-equal gradients, and the memory soak, on both GPU backends within their own time budget), the
# smoke demo on both GPU backends checked against the CPU backend and JAX, and the other demos, all within 8
# minutes, every log and result under $OUT.
#
#   bash benchmarks/device_check.sh            # on the GPU machine, from the repository root
#   bash benchmarks/device_check.sh --dry-run  # the same steps on the cpu backend, small and quick (CI)
#
# gpudp need not be installed: the script runs from the repository root with PYTHONPATH set to it. No network
# is used. Files written under $OUT (a temporary folder when OUT is unset), flat, at most 8:
#   device.txt   device and software information, then the summary of every step
#   tests.log    pytest output of the GPU tests      tests.xml   their JUnit XML
#   demo.log     the demos on the GPU backends (the smoke demo's loss histories and times per iteration too)
#   bench.log    the benchmark suite's output, then the long-rollout cases' output and their Markdown report
#   <device>_<date>.json / .md / .png                the benchmark results (name by device and date)
# Exit status: non-zero when the tests fail (or collect nothing), the benchmark suite fails, or a step times out.
set -uo pipefail

DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument $arg (use --dry-run or nothing)" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -z "${OUT:-}" ]; then
    OUT="$(mktemp -d "${TMPDIR:-/tmp}/gpudp-device-check.XXXXXX")"
fi
mkdir -p "$OUT"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX must not take the GPU memory CuPy needs
unset NUMBA_ENABLE_CUDASIM GPUDP_BACKEND

START=$(date +%s)
TOTAL_BUDGET=470          # seconds for everything (8 minutes, with a margin)
INFO="$OUT/device.txt"
status=0
summary=()

remaining() { echo $(( TOTAL_BUDGET - ($(date +%s) - START) )); }

# run_step NAME LIMIT LOG CMD...: run CMD with a time limit (capped by what is left of the budget), output
# appended to LOG; records the outcome in the summary and returns CMD's exit status (124 on time-out)
run_step() {
    local name="$1" limit="$2" log="$3"
    shift 3
    local left
    left=$(remaining)
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -le 5 ]; then
        summary+=("$name: SKIPPED (time budget spent)")
        echo "device_check: $name skipped: the time budget is spent" | tee -a "$log"
        return 124
    fi
    echo "==== $name (limit ${limit}s): $*" >>"$log"
    local t0 rc
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    local took=$(( $(date +%s) - t0 ))
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        summary+=("$name: TIMED OUT after ${took}s")
    elif [ "$rc" -eq 0 ]; then
        summary+=("$name: ok (${took}s)")
    else
        summary+=("$name: FAILED with exit status $rc (${took}s)")
    fi
    tail -n 25 "$log"
    return "$rc"
}

# -- 1. device and software --------------------------------------------------------------------------------
{
    echo "gpudp device check $( [ "$DRY_RUN" = 1 ] && echo '(dry run on the cpu backend)' ) $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi
        nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,power.limit,driver_version --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    "$PYTHON" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "numba", "numba_cuda", "cupy", "torch", "jax", "matplotlib", "pytest"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
EOF
    "$PYTHON" -m gpudp info
} >"$INFO" 2>&1
cat "$INFO"

# The test modules of the newest operators (checkpointed rollouts, the multigrid and FFT Poisson preconditioners,
# obstacles, MAC advection): collected with the rest of `tests` below (their
# backend-parametrised tests carry the gpu/cudasim marks) and run first (benchmarks/pytest_first.py), so that they
# have run when the time limit ends the step early; named here so that a missing module fails the check instead
# of passing unnoticed.
NEW_TEST_MODULES=(tests/test_checkpointing.py tests/test_advect_checkpoints.py
                  tests/test_multigrid.py tests/test_cupy_multigrid.py tests/test_poisson.py tests/test_obstacles.py
                  tests/test_mac.py tests/test_cupy_mac.py)
export GPUDP_TESTS_FIRST="$(IFS=,; echo "${NEW_TEST_MODULES[*]}")"
SMOKE_TOL=1e-10           # the smoke check's Poisson tolerance: loss histories comparable to 1e-6 across backends
if [ "$DRY_RUN" = 1 ]; then
    # the same steps, quick and on the CPU: backend-parametrised tests of one module, smoke sizes, the smoke
    # check for one iteration on the cpu backend (and JAX), no other demos
    TEST_ARGS=(-m "not gpu and not cudasim" -k "cpu" tests/test_backends.py)
    BENCH_ARGS=(--backends cpu --smoke)
    ROLLOUT_BENCH_ARGS=(--backends cpu --smoke)
    DEMO_BACKENDS=()
    SMOKE_BACKENDS=cpu
    SMOKE_ITERATIONS=1
else
    TEST_ARGS=(-m "gpu or cudasim" tests)
    BENCH_ARGS=(--sizes default)
    ROLLOUT_BENCH_ARGS=(--backends cupy,numba-cuda --sizes default)
    DEMO_BACKENDS=(cupy numba-cuda)
    SMOKE_BACKENDS=cupy,numba-cuda,cpu
    SMOKE_ITERATIONS=2
    export GPUDP_REQUIRE_BACKENDS=cupy,numba-cuda   # a GPU backend that cannot run fails its tests
    # the Poisson-solver case runs its GPU sizes largest first; rows left when this many seconds are spent are
    # recorded as skipped (its slow baselines are capped by iteration limits)
    export GPUDP_BENCH_SOLVERS_SECONDS=80
    # the long-rollout cases (cheap ones first: advect_upwind, the soak, the smoke step): rows left when this many
    # seconds are spent are recorded as skipped
    export GPUDP_BENCH_ROLLOUT_SECONDS=50
fi
ROLLOUT_CASES=rollout_advect,soak,rollout_smoke

# -- 2. GPU tests on both GPU backends -------------------------------------------------------------------------
if [ "$DRY_RUN" = 0 ]; then
    for m in "${NEW_TEST_MODULES[@]}"; do
        if [ ! -f "$m" ]; then
            summary+=("tests: $m is missing")
            echo "device_check: $m is missing" | tee -a "$OUT/tests.log"
            status=1
        fi
    done
fi
run_step "tests" 180 "$OUT/tests.log" \
    "$PYTHON" -m pytest -q -p no:cacheprovider -p benchmarks.pytest_first --junitxml="$OUT/tests.xml" "${TEST_ARGS[@]}"
rc=$?
if [ "$rc" -ne 0 ]; then
    status=1
    [ "$rc" -eq 5 ] && summary+=("tests: pytest collected no tests")
fi
unset GPUDP_REQUIRE_BACKENDS

# -- 3. the benchmark suite at GPU sizes ------------------------------------------------------------------------
run_step "benchmarks" 240 "$OUT/bench.log" "$PYTHON" -m benchmarks "${BENCH_ARGS[@]}" --skip-cases "$ROLLOUT_CASES" \
    --out "$OUT" || status=1

# -- 3b. long rollouts: checkpointed against stored (time, memory, bitwise gradients) and the memory soak on both GPU
# backends, a run of their own (a time-out here leaves the suite's results above whole); their JSON stays in a
# temporary folder (at most 8 files under $OUT), their Markdown report is appended to bench.log
ROLLOUT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/gpudp-rollout.XXXXXX")"
run_step "rollout benchmarks" 80 "$OUT/bench.log" "$PYTHON" -m benchmarks "${ROLLOUT_BENCH_ARGS[@]}" \
    --cases "$ROLLOUT_CASES" --out "$ROLLOUT_DIR" || status=1
for md in "$ROLLOUT_DIR"/*.md; do
    [ -f "$md" ] && { echo "==== rollout benchmarks: $(basename "$md")"; cat "$md"; } >>"$OUT/bench.log"
done
rm -rf "$ROLLOUT_DIR"

# -- 4. the demos on the GPU backends (end to end through the public API) -------------------------------------
DEMO_DIR="$(mktemp -d "${TMPDIR:-/tmp}/gpudp-demo.XXXXXX")"
# the smoke demo (gpudp.demo.smoke.run, what `python -m gpudp demo smoke` runs) for a few iterations on each GPU
# backend and the cpu backend, then the independent JAX implementation: loss histories within 1e-6 relative,
# times per iteration printed
run_step "smoke demo on $SMOKE_BACKENDS (+ JAX)" 80 "$OUT/demo.log" \
    "$PYTHON" -m benchmarks.smoke_check --backends "$SMOKE_BACKENDS" --iterations "$SMOKE_ITERATIONS" \
    --tol "$SMOKE_TOL" --out "$DEMO_DIR/smoke" || status=1
for b in ${DEMO_BACKENDS[@]+"${DEMO_BACKENDS[@]}"}; do
    run_step "demo on $b" 25 "$OUT/demo.log" \
        "$PYTHON" -m gpudp demo advection pressure --backend "$b" --quiet --out "$DEMO_DIR/$b" || status=1
done
rm -rf "$DEMO_DIR"

# -- summary ----------------------------------------------------------------------------------------------------
{
    echo
    echo "==== summary ($(( $(date +%s) - START ))s in all; files in $OUT)"
    for line in "${summary[@]}"; do echo "  $line"; done
    echo "  exit status: $status"
} | tee -a "$INFO"
exit "$status"
