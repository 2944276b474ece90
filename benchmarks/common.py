"""What every script here does last: name the machine, and write the report where asked."""

from fastmnist.machine import describe
from fastmnist.output import write_json


def finish(report: dict, out: str | None) -> int:
    print(describe(report["machine"]))
    if out:
        write_json(out, report)
        print(f"wrote {out}")
    return 0
