"""What the per-epoch progress line of `fastmnist train` costs inside the timed region.

The line is printed once per epoch, after that epoch's test evaluation, by the same function `train`
uses. This times that function over many calls, writing to a real stderr stream (a file here), and puts the
per-call cost beside each multi-epoch stage of a ladder.json: lines printed (epochs) x cost / run time.

    python benchmarks/epoch_line_cost.py --ladder results/ladder/ladder.json --out results/epoch-line-cost.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from common import finish

from fastmnist.cli import epoch_printer
from fastmnist.recipes import get_recipe
from fastmnist.machine import machine_info
from fastmnist.records import envelope


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--ladder", required=True, help="a ladder.json, for the stages' epochs and seconds")
    parser.add_argument("--out")
    args = parser.parse_args()
    printer = epoch_printer(SimpleNamespace(quiet=False), get_recipe("stage0"))
    timings = []
    with tempfile.TemporaryFile("w") as sink, contextlib.redirect_stderr(sink):
        for _ in range(5):
            start = time.perf_counter()
            for epoch in range(args.calls):
                printer(epoch, 99.12, 12.3)
            timings.append((time.perf_counter() - start) / args.calls)
    per_line = statistics.median(timings)
    stages = json.loads(Path(args.ladder).read_text())["stages"]
    shares = {name: stage["summary"]["epochs_mean"] * per_line / stage["summary"]["seconds_mean"]
              for name, stage in stages.items() if stage["recipe"]["epochs"] > 1}
    report = {**envelope("epoch-line-cost", machine_info(torch.device("cpu")), []),
              "seconds_per_line": per_line, "share_of_run_by_stage": shares}
    print(f"one epoch line: {per_line * 1e6:.1f} us; largest share of a multi-epoch stage's run: "
          f"{100 * max(shares.values()):.5f}% ({max(shares, key=shares.get)})")
    return finish(report, args.out)


if __name__ == "__main__":
    sys.exit(main())
