#!/usr/bin/env bash
# The GPU measurements in one command, for a fresh GPU machine with PyTorch (CUDA) installed and no network
# (see ../shared/gpu/README.md). Before sending the checkout there, bring the wheels and MNIST along in the
# ignored folder .gpu/ and carry it:
#
#     mkdir -p .gpu && cp -r ../shared/gpu/wheels ../shared/mnist .gpu/
#     bash benchmarks/gpu.sh            # on the GPU machine, from the project's root; about 4-5 minutes (an estimate: not yet run on a GPU)
#
# It installs fastmnist and the packages the machine lacks from .gpu/wheels (no index), runs the CUDA tests,
# the bar of the graph engine (`bench stage14 fastest --runs 25 --device cuda`), stage 18 against stages 19-30
# (captured; fused Adam; channels_last end to end; the search's batch and lr; conv1 over 2x2 blocks; bf16
# images; the replicating search's find), prints each recipe's median split
# into model creation, training and test, and runs the ladder 3-30 with 3 runs a stage; it writes everything
# to results/gpu/ (JSON with the machine, the commit and the command line, the test log, the parts).
#
# Checked on a CPU, without installing and on fewer runs (the suite's smoke test runs it so, on a slice of the
# images: SET=train_fraction=0.05, one test):
#     SKIP_INSTALL=1 DEVICE=cpu RUNS=2 LADDER_STAGES=18-21 LADDER_RUNS=1 OUT=/tmp/gpu-check bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BRING=${BRING:-.gpu}
DEVICE=${DEVICE:-cuda}
RUNS=${RUNS:-25}
LADDER_STAGES=${LADDER_STAGES:-3-30}
LADDER_RUNS=${LADDER_RUNS:-3}
OUT=${OUT:-results/gpu}
PYTHON=${PYTHON:-python3}
TESTS=${TESTS:-tests/test_engine.py tests/test_cli.py::test_train_json_small_budget tests/test_api.py::test_a_user_network_gets_init_from_data_inside_the_run}
SET=${SET:+--set $SET}  # a recipe override for the benches, e.g. SET=train_fraction=0.05 for a quick check

for needed in "$BRING/mnist" "$BRING/wheels"; do
    [ -d "$needed" ] || { echo "gpu.sh: $needed is missing: mkdir -p .gpu && cp -r ../shared/gpu/wheels ../shared/mnist .gpu/ (then carry .gpu)" >&2; exit 2; }
done
if [ -z "${SKIP_INSTALL:-}" ]; then
    site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$site" "$BRING"/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation .
fi
export FASTMNIST_DATA="$(cd "$BRING/mnist" && pwd)"
export FASTMNIST_CACHE="$(mktemp -d)"
mkdir -p "$OUT"
fastmnist() { "$PYTHON" -m fastmnist.cli "$@"; }

"$PYTHON" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device:",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
PY
# the CUDA tests (they skip, saying so, where no GPU is seen), then the two that failed on CUDA before
# shellcheck disable=SC2086  # TESTS is a list of test ids
"$PYTHON" -m pytest -q -rs $TESTS 2>&1 | tee "$OUT/tests.txt"
# shellcheck disable=SC2086  # SET is empty or one --set KEY=VALUE
fastmnist bench stage14 fastest --runs "$RUNS" --device "$DEVICE" --offline --quiet $SET \
    --out "$OUT/bench-stage14-vs-fastest-$RUNS.json"
# shellcheck disable=SC2086
fastmnist bench stage18 stage19 stage20 stage21 stage22 stage23 stage24 stage25 stage26 stage27 stage28 stage29 stage30 --runs "$RUNS" --device "$DEVICE" --offline --quiet $SET \
    --out "$OUT/bench-stage18-vs-stage19-30-$RUNS.json"
# where each recipe's time goes: model creation (a reset, when captured), training, test (medians over seeds)
"$PYTHON" - "$OUT"/bench-*.json <<'PY' | tee "$OUT/parts.txt"
import json, sys
for path in sys.argv[1:]:
    for row in json.load(open(path))["summary"]:
        parts = ", ".join(f"{part} {1000 * row[f'{part}_seconds_median']:.1f} ms" for part in ("creation", "training", "test"))
        print(f"{row['recipe']} ({row['engine']}): median {1000 * row['seconds_median']:.1f} ms; {parts}")
PY
fastmnist ladder --stages "$LADDER_STAGES" --runs "$LADDER_RUNS" --device "$DEVICE" --offline --quiet \
    --out "$OUT/ladder" > /dev/null
cat "$OUT/ladder/ladder.md"
echo "wrote $OUT"
