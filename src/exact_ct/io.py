"""Atomic file writes and canonical (RAS+, int16 HU) NIfTI reading and writing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted writer therefore never leaves a half-written file where a reader would look.
    The temporary name keeps the final suffixes so that libraries choosing a format by extension work.
    The file gets the permissions a plain ``open()`` would give (0666 less the umask), not mkstemp's 0600.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    os.chmod(tmp_name, 0o666 & ~_umask())
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (read by setting and restoring it; no other way exists before Python 3.14)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON deterministically (sorted keys, fixed indentation, trailing newline)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_csv_atomic(path: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame as CSV atomically, without the index, with '\\n' line endings."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_nifti(
    array: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str], dtype: Any = np.int16
) -> None:
    """Save an array (x, y, z[, c]) with a millimetre affine as NIfTI, atomically and reproducibly.

    gzip output is made byte-reproducible by nibabel (no timestamp in the gzip header since 5.x uses
    mtime=0 for ``Nifti1Image.to_filename``); qform and sform both carry the affine (code 1, scanner).
    """
    img = nib.Nifti1Image(np.asarray(array).astype(dtype, copy=False), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def load_canonical(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI and reorient it to RAS+ (closest canonical). Returns (array, affine_ras)."""
    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
    except nib.filebasedimages.ImageFileError as e:
        raise ValueError(f"{path}: not a NIfTI volume that can be read ({e})") from None
    return np.asanyarray(img.dataobj), img.affine.copy()


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing in mm along the array's x, y, z axes."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]
