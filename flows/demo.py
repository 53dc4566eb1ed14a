"""`make demo`: the two-batch story on the synthetic hospital, through the Prefect retrain flow.

1. synthesise batch 1 into the inbox (ground truth kept apart in data/synth/<batch>/truth);
2. `retrain` registers it and runs the whole pipeline;
3. batch 2 arrives; `retrain` reruns only batch 2's per-batch stages plus the shared ones.
Running it again does no new work: the batches are registered and DVC is up to date.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from flows.retrain import retrain

REPO = Path(__file__).resolve().parents[1]


def _demo_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8")) or {}
    return params.get("demo") or {}


def synthesise(batch: str, studies: int, seed: int) -> Path | None:
    """Write a synthetic drop into data/inbox/<batch>, its truth into data/synth/<batch>/truth (DVC-tracked).

    Nothing happens for a batch that is already registered, so the demo can be rerun.
    """
    registered = (yaml.safe_load((REPO / "params.yaml").read_text()) or {}).get("batches") or []
    if batch in registered:
        return None
    work = REPO / "data" / "synth" / ".work" / batch
    truth = REPO / "data" / "synth" / batch
    inbox = REPO / "data" / "inbox" / batch
    shutil.rmtree(work, ignore_errors=True)
    cmd = [
        str(Path(sys.executable).with_name("exact")),
        "synth",
        "--studies",
        str(studies),
        "--out",
        str(work),
        "--seed",
        str(seed),
        "--batch",
        batch,
    ]
    subprocess.run(cmd, cwd=REPO, check=True)
    shutil.rmtree(truth, ignore_errors=True)
    truth.mkdir(parents=True)
    shutil.move(str(work / "truth"), str(truth / "truth"))
    subprocess.run(
        [str(Path(sys.executable).with_name("dvc")), "add", "--quiet", str(truth.relative_to(REPO))],
        cwd=REPO,
        check=True,
    )
    # The hospital copies its export into the inbox and writes the marker last: a rename is atomic.
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work / "drop"), str(inbox))
    shutil.rmtree(work, ignore_errors=True)
    return inbox


def main() -> int:
    params = _demo_params()
    batches: dict[str, int] = params.get("batches") or {"demo-b1": 40, "demo-b2": 24}
    seed = int(params.get("seed", 7))
    t0 = time.perf_counter()
    for i, (batch, studies) in enumerate(batches.items()):
        print(f"\n== batch {batch}: {studies} synthetic studies ==", flush=True)
        synthesise(batch, studies, seed + i)
        result = retrain(repo=str(REPO), push=True)
        for stage in result.get("stages", []):
            print(
                f"  {stage['stage']:<15} ran {len(stage['ran']):>2}  skipped {len(stage['skipped']):>2}"
                f"  ({stage['seconds']:.0f} s)"
            )
        print(f"  -> {result['status']}", flush=True)
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f} s. Where to look:")
    print("  reports/              per-stage summaries, metrics, plots")
    print("  reports/evaluate/     the HTML evaluation report (when the evaluate stage exists)")
    print("  models/registry/      published model versions (when the publish stage exists)")
    print("  make server           then open http://127.0.0.1:4200 for the Prefect UI (runs and artifacts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
