"""Cache format: one compressed ``.npz`` per study on the model grid, written with reproducible bytes.

Keys: ``image`` (int16 HU), ``organs`` (uint8 pseudo-mask ids), optionally ``truth_organs`` (uint8) and
``truth_lesions`` (uint8, (18, x, y, z), channel order = schema.ABNORMALITIES), plus the geometry:
``grid_affine`` (4x4), ``src_affine`` (4x4, the canonical volume's) and ``src_shape`` (3,), enough to map
anything on the model grid back onto the canonical grid (grid.to_canonical).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from exact_ct.io import atomic_path

# numpy's savez stamps every member with the current time; a fixed stamp makes the bytes a function of
# the arrays only, so DVC sees an unchanged cache as unchanged.
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as a deflate-compressed npz (readable with ``np.load``) atomically and reproducibly."""
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf,
    ):
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=6)


def load_npz(path: str | os.PathLike[str], keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays of a cached study, loaded eagerly (no pickles): all of them, or only ``keys`` (members
    not read are never decompressed: training needs image and organs, not the 18 truth lesion masks)."""
    with np.load(Path(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files if keys is None or k in keys}
