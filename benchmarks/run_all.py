"""Run every benchmark script in this folder and print their one-line results (`make bench`).

``--quick`` (`make bench-quick`) passes ``--quick`` to every script (each takes it: smaller sizes, a sanity
check of the figures in minutes, not the figures the docs quote); ``--only NAME`` runs the scripts whose
name contains NAME.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", default="", help="run only scripts whose name contains this")
    args = parser.parse_args(argv)
    scripts = sorted(
        p
        for p in HERE.glob("*.py")
        if p.name != "run_all.py" and not p.name.startswith("_") and args.only in p.stem
    )
    failures = 0
    lines = []
    for script in scripts:
        t0 = time.perf_counter()
        # every benchmark takes --quick (a script without it fails here rather than run at full size)
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True)
        took = time.perf_counter() - t0
        out = [line for line in proc.stdout.strip().splitlines() if line.strip()]
        if proc.returncode != 0 or not out:
            failures += 1
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            line = f"{script.stem}: FAILED (exit {proc.returncode}): {tail}"
        else:
            line = out[-1]
        lines.append(line)
        print(f"{line}    [{took:.0f} s]", flush=True)
    print(f"{len(scripts) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
