"""Run every benchmark script in this folder and print their one-line results (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and not p.name.startswith("_"))
    failures = 0
    lines = []
    for script in scripts:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], cwd=HERE.parent, capture_output=True, text=True)
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
