"""Atomic file writes and canonical (RAS+, int16 HU) NIfTI reading and writing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
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


#: NIfTI header extension codes used here (nifti1.h): 0 = unknown (TotalSegmentator's label table), 6 = comment
ECODE_LABELS, ECODE_COMMENT = 0, 6


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def label_extension(labels: Mapping[int, tuple[str, str]]) -> nib.nifti1.Nifti1Extension:
    """Label names in the NIfTI header as TotalSegmentator writes them (a Caret ``LabelTable`` XML
    extension): ``labels`` maps id -> (name, ``#rrggbb``). Read back with TotalSegmentator's
    ``load_multilabel_nifti``."""
    rows = []
    for key, (name, colour) in sorted(labels.items()):
        r, g, b = (v / 255 for v in _rgb(colour))
        rows.append(
            f'<Label Key="{key}" Red="{r:.4f}" Green="{g:.4f}" Blue="{b:.4f}" Alpha="1">'
            f"<![CDATA[{name}]]></Label>"
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<CaretExtension><VolumeInformation Index="0"><LabelTable>\n'
        + "\n".join(rows)
        + "\n</LabelTable><VolumeType><![CDATA[Label]]></VolumeType></VolumeInformation></CaretExtension>\n"
    )
    return nib.nifti1.Nifti1Extension(ECODE_LABELS, xml.encode("utf-8"))


def comment_extension(obj: Any) -> nib.nifti1.Nifti1Extension:
    """A JSON object in a NIfTI comment extension (code 6), e.g. the names of a 4-D file's components."""
    return nib.nifti1.Nifti1Extension(ECODE_COMMENT, json.dumps(obj, sort_keys=True).encode("utf-8"))


def write_label_tables(stem: str | os.PathLike[str], labels: Mapping[int, tuple[str, str]]) -> list[Path]:
    """``<stem>.ctbl`` (3D Slicer colour table) and ``<stem>_itksnap.txt`` (ITK-SNAP label description) for
    a label map; ``labels`` maps id -> (name, ``#rrggbb``); id 0 is drawn transparent."""
    stem = Path(stem)
    ctbl = [f"# Color table file {stem.name}.ctbl", f"# {len(labels)} values"]
    snap = [
        "# ITK-SnAP Label Description File",
        "# IDX  -R-  -G-  -B-  -A--  VIS MSH  LABEL",
    ]
    for key, (name, colour) in sorted(labels.items()):
        r, g, b = _rgb(colour)
        alpha = 0 if key == 0 else 255
        ctbl.append(f"{key} {name} {r} {g} {b} {alpha}")
        snap.append(
            f"{key:5d} {r:4d} {g:4d} {b:4d} {alpha / 255:5.2f} {int(key != 0):3d} {int(key != 0):3d}  "
            + '"'
            + name.replace('"', "'")
            + '"'
        )
    out = [stem.with_name(stem.name + ".ctbl"), stem.with_name(stem.name + "_itksnap.txt")]
    write_text_atomic(out[0], "\n".join(ctbl) + "\n")
    write_text_atomic(out[1], "\n".join(snap) + "\n")
    return out


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    dtype: Any = np.int16,
    *,
    extensions: Sequence[nib.nifti1.Nifti1Extension] = (),
    intent: str | None = None,
    descrip: str = "",
) -> None:
    """Save an array (x, y, z[, c]) with a millimetre affine as NIfTI, atomically and reproducibly.

    ``extensions`` go into the header (label names, component names), ``intent`` (e.g. ``"label"``) and
    ``descrip`` (80 characters at most) into their header fields.

    gzip output is made byte-reproducible by nibabel (no timestamp in the gzip header since 5.x uses
    mtime=0 for ``Nifti1Image.to_filename``); qform and sform both carry the affine (code 1, scanner).
    """
    img = nib.Nifti1Image(np.asarray(array).astype(dtype, copy=False), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    for ext in extensions:
        img.header.extensions.append(ext)
    if intent:
        img.header.set_intent(intent)
    if descrip:
        img.header["descrip"] = descrip[:80].encode("ascii", "replace")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def save_label_map(
    labels: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    table: Mapping[int, tuple[str, str]],
    descrip: str = "",
) -> None:
    """A uint8 label map whose header names its labels (``table``: id -> (name, ``#rrggbb``); see
    :func:`label_extension`) with intent ``label``, so viewers and TotalSegmentator's tools show names."""
    save_nifti(
        labels, affine, path, np.uint8, extensions=[label_extension(table)], intent="label", descrip=descrip
    )


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
