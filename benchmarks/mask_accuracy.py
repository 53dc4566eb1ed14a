"""Dice per organ of the intensity mask backend against real TotalSegmentator references and synthetic truth.

(a) example_ct_sm.nii.gz against TotalSegmentator's own `total` output (lungs, aorta: the organs present),
(b) pulmonary_report heart mask (resampled to its CT grid), (c) aorta_report aorta mask, (d) synthetic
studies from exact_ct.synth (all nine organs) and the share of synthetic pleural-effusion voxels inside the
pleura label. Per-organ table to stderr; one summary line (mean real-CT lung Dice vs the 0.95 goal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ct" / "totalseg"
GOALS = {"lung_left": 0.95, "lung_right": 0.95, "heart": 0.85, "aorta": 0.80}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks by MONAI's ``compute_dice`` (:func:`exact_ct.evaluation.localization.dice`); nan when both
    are empty, so that a study without the organ does not count in the mean."""
    from exact_ct.evaluation.localization import dice as monai_dice

    d = monai_dice(a, b)
    return float("nan") if d is None else d


def on_ct_grid(mask_path: Path, ct_path: Path) -> np.ndarray:
    """Reference mask resampled (nearest) onto the canonical grid of its CT."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    ct = nib.as_closest_canonical(nib.load(str(ct_path)))
    res = resample_from_to(nib.load(str(mask_path)), ct, order=0)
    return np.asanyarray(res.dataobj) > 0


SEED = 20260427


def _has_effusion(index: int) -> bool:
    from exact_ct.synth import render_study

    return render_study(index, seed=SEED).labels.get("Pleural effusion", 0) == 1


def _synthetic_scores(index: int) -> tuple[int, list[float], float | None]:
    """Dice per organ (ids 1-9) of one synthetic study, and its effusion share inside the pleura label."""
    from exact_ct.masks.intensity import segment
    from exact_ct.schema import ORGAN_IDS
    from exact_ct.synth import render_study

    s = render_study(index, seed=SEED)
    lab = segment(s.hu, s.affine)
    scores = [dice(lab == k, s.organs == k) for k in range(1, 10)]
    eff = s.lesions.get("Pleural effusion")
    share = float((lab[eff > 0] == ORGAN_IDS["pleura"]).mean()) if eff is not None and eff.any() else None
    return index, scores, share


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="3 synthetic studies (one with effusion) instead of 20"
    )
    args = p.parse_args(argv)
    from exact_ct.io import load_canonical
    from exact_ct.masks.intensity import segment
    from exact_ct.schema import ORGAN_IDS, ORGANS

    # The synthetic studies run first, in worker processes forked before this process computes any Dice:
    # MONAI's Dice initialises torch's thread pool, and a process forked after that can hang.
    n = 3 if args.quick else 20
    # Studies 0.. plus the first study with a pleural effusion (the effusion-in-pleura figure needs one).
    # 20 studies: a single phantom moves an organ's mean by up to 0.15.
    indices = list(range(n - 1))
    with_effusion = [i for i in range(n - 1, 80) if _has_effusion(i)][: max(1, n - len(indices))]
    indices += with_effusion
    synth: dict[str, list[float]] = {ORGANS[i]: [] for i in range(1, 10)}
    effusion_share: list[float] = []
    from exact_ct.parallel import map_ordered

    for i, scores, share in map_ordered(
        _synthetic_scores, indices, workers=2, desc="synthetic", progress=False
    ):
        for k in range(1, 10):
            synth[ORGANS[k]].append(scores[k - 1])
        if share is not None:
            effusion_share.append(share)
        print(
            f"synthetic study {i}: "
            + " ".join(f"{ORGANS[k]}={synth[ORGANS[k]][-1]:.2f}" for k in range(1, 10)),
            file=sys.stderr,
        )
    rows: list[tuple[str, str, float]] = []
    hu, affine = load_canonical(DATA / "example_ct_sm.nii.gz")
    ref, _ = load_canonical(DATA / "example_seg.nii.gz")
    lab = segment(np.asarray(hu), affine)
    rows.append(("a: example_ct_sm vs TotalSegmentator", "lung_left", dice(lab == 1, np.isin(ref, [10, 11]))))
    rows.append(
        ("a: example_ct_sm vs TotalSegmentator", "lung_right", dice(lab == 2, np.isin(ref, [12, 13, 14])))
    )
    rows.append(("a: example_ct_sm vs TotalSegmentator", "aorta", dice(lab == 6, ref == 52)))
    for tag, sub, mask, organ in (
        ("b", "pulmonary_report", "heart", "heart"),
        ("c", "aorta_report", "aorta", "aorta"),
    ):
        ct = DATA / sub / "ct_cropped.nii.gz"
        hu, affine = load_canonical(ct)
        lab = segment(np.asarray(hu), affine)
        rows.append(
            (
                f"{tag}: {sub} (contrast CT)",
                organ,
                dice(lab == ORGAN_IDS[organ], on_ct_grid(DATA / sub / f"{mask}.nii.gz", ct)),
            )
        )

    n = len(indices)
    for organ, values in synth.items():
        rows.append((f"d: synthetic (n={n})", organ, float(np.nanmean(values))))

    print(f"{'case':42s} {'organ':12s} {'Dice':>6s}  goal", file=sys.stderr)
    for case, organ, d in rows:
        goal = GOALS.get(organ, 0.0) if not case.startswith("d") else 0.90
        print(
            f"{case:42s} {organ:12s} {d:6.3f}  {goal:.2f}{'' if d >= goal else '  MISSED'}", file=sys.stderr
        )
    share = (
        f"{np.mean(effusion_share):.3f} over {len(effusion_share)} studies"
        if effusion_share
        else "no study with effusion"
    )
    print(f"synthetic pleural effusion voxels inside pleura label: {share} (goal >= 0.90)", file=sys.stderr)
    lung = float(np.mean([d for c, o, d in rows if c.startswith("a") and o.startswith("lung")]))
    print(f"mask_accuracy: {lung:.3f} mean lung Dice on real CT (ratio {lung / 0.95:.2f} vs goal Dice 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
