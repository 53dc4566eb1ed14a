"""`make demo`: the two-batch story on the synthetic hospital, through the Prefect retrain flow.

1. synthesise batch 1 into the inbox (ground truth kept apart in data/synth/<batch>/truth, DVC-tracked);
2. `retrain` registers it and runs the whole pipeline (publishes v1);
3. batch 2 arrives; `retrain` reruns only batch 2's per-batch stages plus the shared ones.
Running it again does no new work: the batches are registered and DVC is up to date.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flows.config import demo_config
from flows.retrain import retrain

REPO = Path(__file__).resolve().parents[1]


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def synthesise(repo: Path, batch: str, studies: int, seed: int) -> Path | None:
    """Write a synthetic drop into data/inbox/<batch> and its truth into data/synth/<batch>/truth.

    Nothing happens for a batch that is already registered, so the demo can be rerun.
    """
    from exact_ct.batches import read_batches

    if batch in read_batches(repo / "params.yaml"):
        return None
    work = repo / "data" / "synth" / ".work" / batch
    truth = repo / "data" / "synth" / batch
    inbox = repo / "data" / "inbox" / batch
    shutil.rmtree(work, ignore_errors=True)
    cmd = [
        _bin("exact"),
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
    subprocess.run(cmd, cwd=repo, check=True)
    shutil.rmtree(truth, ignore_errors=True)
    truth.mkdir(parents=True)
    shutil.move(str(work / "truth"), str(truth / "truth"))
    subprocess.run([_bin("dvc"), "add", "--quiet", str(truth.relative_to(repo))], cwd=repo, check=True)
    # The hospital copies its export into the inbox and writes the marker last; a rename is atomic.
    shutil.rmtree(inbox, ignore_errors=True)
    inbox.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work / "drop"), str(inbox))
    shutil.rmtree(work, ignore_errors=True)
    return inbox


def run_demo(repo: Path = REPO, push: bool = True) -> list[dict[str, Any]]:
    """Synthesise and retrain batch by batch (params.yaml `demo`); returns the result of each retrain run."""
    cfg = demo_config(repo)
    seed = cfg.seed
    results: list[dict[str, Any]] = []
    for i, (batch, studies) in enumerate(cfg.batches.items()):
        print(f"\n== batch {batch}: {studies} synthetic studies ==", flush=True)
        synthesise(repo, batch, studies, seed + i)  # each batch its own seed: different patients and images
        # The drop appeared by one rename (nothing is still being written): no settle time to wait for.
        result: dict[str, Any] = retrain(repo=str(repo), push=push, settle_seconds=0)
        for stage in result.get("stages", []):
            print(
                f"  {stage['stage']:<15} ran {len(stage['ran']):>2}  skipped {len(stage['skipped']):>2}"
                f"  ({stage['seconds']:.0f} s)"
            )
        gate = (result.get("summary") or {}).get("publish") or {}
        commit = (result.get("git") or {}).get("commit")
        print(
            f"  -> {result['status']}; gate {gate.get('status', 'not run')}"
            + (f"; git commit {commit[:12]}" if commit else ""),
            flush=True,
        )
        results.append(result)
    return results


def main() -> int:
    t0 = time.perf_counter()
    run_demo(REPO)
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f} s. Where to look:")
    print(
        "  reports/evaluate/index.html   the evaluation report (metrics, curves, overlays, grounded reports)"
    )
    print("  reports/                      per-stage summaries, metrics and plots")
    print("  models/registry/              published model versions with model cards")
    print(
        "  make server                   then open http://127.0.0.1:4200 for the Prefect runs and artifacts"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
