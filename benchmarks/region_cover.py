"""Region cover: the share of each abnormality's synthetic lesion voxels inside its confinement region.

Synthetic studies (``exact synth``'s renderer, demo profile) get intensity pseudo masks; study, masks and
lesion masks are resampled onto the model grid of ``build_dataset``'s active profile, and the confinement
regions of ``exact_ct.model.pooling.region_masks`` (organ ids + margin, ``schema.CONFINEMENT_REGIONS``)
are taken from the pseudo masks: the regions training confines with. Also printed: each region's volume
as a share of the body, and the cover of the home organs alone (no margin), which the masks miss where a
lesion changes the organ's density. Per-abnormality table to stderr; one summary line (the lowest cover
against the 0.95 goal).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

ANCHOR = 0.95
SEED = 20260427


def _one(index: int, seed: int, spacing: tuple[float, ...], size: tuple[int, ...]) -> np.ndarray:
    """(3, 18, 3): [with margin, home organs only] x abnormality x [lesion voxels inside, lesion voxels,
    region voxels], plus the body voxel count in the third row."""
    from exact_ct.dataset.grid import GridPlan, mask_to_model_grid, to_model_grid
    from exact_ct.masks.intensity import segment
    from exact_ct.model.pooling import region_masks
    from exact_ct.schema import ABNORMALITIES, DEFAULT_ORGAN_REGIONS
    from exact_ct.synth import render_study

    s = render_study(index, seed, "demo")
    plan = GridPlan(spacing, size)  # type: ignore[arg-type]
    _, g_aff = to_model_grid(s.hu, s.affine, plan)
    organs = mask_to_model_grid(segment(s.hu, s.affine), s.affine, g_aff, plan)
    with_margin = region_masks(organs, spacing)
    home = np.stack([np.isin(organs, DEFAULT_ORGAN_REGIONS[n]) for n in ABNORMALITIES])
    out = np.zeros((3, len(ABNORMALITIES), 3))
    out[2, :, 0] = (organs > 0).sum()
    for a, name in enumerate(ABNORMALITIES):
        out[0, a, 2], out[1, a, 2] = with_margin[a].sum(), home[a].sum()
        if name not in s.lesions:
            continue
        lesion = mask_to_model_grid(s.lesions[name], s.affine, g_aff, plan) > 0
        for r, region in enumerate((with_margin[a], home[a])):
            out[r, a, :2] = (lesion & region).sum(), lesion.sum()
    return out


def main(argv: list[str] | None = None) -> int:
    import yaml

    from exact_ct.parallel import map_ordered
    from exact_ct.schema import ABNORMALITIES

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="40 studies")
    args = ap.parse_args(argv)
    n = 40 if args.quick else args.studies
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    bd = params["build_dataset"]
    prof = bd["profiles"][bd["profile"]]
    spacing, size = tuple(float(v) for v in prof["spacing_xyz_mm"]), tuple(int(v) for v in prof["size_xyz"])
    total = sum(
        map_ordered(
            partial(_one, seed=args.seed, spacing=spacing, size=size),
            range(n),
            workers=args.workers,
            desc="region cover",
        )
    )
    body = total[2, 0, 0]
    print(f"{n} synthetic studies, model grid {spacing} mm x {size}", file=sys.stderr)
    print(f"  {'abnormality':34s} {'cover':>6s} {'home organs':>11s} {'region/body':>11s}", file=sys.stderr)
    covers = []
    for a, name in enumerate(ABNORMALITIES):
        if total[0, a, 1] == 0:
            print(f"  {name:34s} no lesion in {n} studies", file=sys.stderr)
            continue
        cover, home = total[0, a, 0] / total[0, a, 1], total[1, a, 0] / total[1, a, 1]
        covers.append(cover)
        print(f"  {name:34s} {cover:6.3f} {home:11.3f} {total[0, a, 2] / body:11.2f}", file=sys.stderr)
    low = min(covers)
    print(
        f"region_cover: lowest {low:.3f} of {len(covers)} abnormalities (ratio {low / ANCHOR:.3f} vs goal 0.95)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
