"""What a user of the command line sees: progress bars on a terminal, one-line errors, file permissions."""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from exact_ct.cli import main
from exact_ct.io import save_nifti, write_json_atomic
from exact_ct.logs import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_the_main_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    term = _Tty()
    monkeypatch.setattr(sys, "stderr", term)
    assert list(progress(range(3), "epoch 1/2", unit="step")) == [0, 1, 2]
    assert "epoch 1/2" in term.getvalue() and "/3" in term.getvalue()
    term.truncate(0)
    assert list(progress(range(3), "peer", enabled=False)) == [0, 1, 2]
    assert "peer" not in term.getvalue()
    piped = io.StringIO()  # a log file or a captured pipe: no bar lines
    monkeypatch.setattr(sys, "stderr", piped)
    assert list(progress(range(3), "epoch 1/2")) == [0, 1, 2] and piped.getvalue() == ""


def test_pseudo_masks_on_a_text_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text = tmp_path / "README.md"
    text.write_text("# not a scan\n")
    assert main(["pseudo-masks", str(text), str(tmp_path / "out.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("exact pseudo-masks: error:") and "not a NIfTI volume" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_outputs_get_the_usual_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"a": 1})
        save_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "b.nii.gz")
        os.umask(0o002)
        write_json_atomic(tmp_path / "c.json", {"c": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.nii.gz").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o664


def test_overlay_shows_a_weak_anomaly_map(tmp_path: Path) -> None:
    """A map peaking at 0.03 (a typical below-threshold study) must still be visible as colour."""
    from PIL import Image

    from exact_ct.evaluation import explain
    from exact_ct.schema import ABNORMALITIES

    shape = (40, 32, 24)
    hu = np.full(shape, -800.0)
    organs = np.zeros(shape, np.uint8)  # no contours: any colour in the panels is the heat map
    maps = np.zeros((*shape, len(ABNORMALITIES)), np.float32)
    maps[10:20, 10:20, 8:16, 0] = 0.03
    probs = dict.fromkeys(ABNORMALITIES, 0.01) | {ABNORMALITIES[0]: 0.02}
    png = explain.montage(
        tmp_path / "overlay.png", hu, organs, maps, np.diag([4.0, 4.0, 4.0, 1.0]), [], probs
    )
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    h = rgb.shape[0]
    panels = rgb[: int(h * 0.75)]  # above the organ legend
    saturated = (panels.max(-1) - panels.min(-1)) > 80
    assert saturated.sum() > 2000


def test_organ_and_anomaly_maps_carry_their_names(tmp_path: Path) -> None:
    import json

    import nibabel as nib
    from totalsegmentator.nifti_ext_header import load_multilabel_nifti

    from exact_ct.evaluation import explain
    from exact_ct.schema import ABNORMALITIES, ORGANS

    organs = np.zeros((6, 5, 4), np.uint8)
    organs[1:3, 1:3, 1:3] = 5
    maps = np.zeros((6, 5, 4, len(ABNORMALITIES)), np.float32)
    explain.save_maps(tmp_path, maps, organs, np.eye(4))
    img, names = load_multilabel_nifti(str(tmp_path / "organs.nii.gz"))  # TotalSegmentator's reader
    assert names == dict(ORGANS) and img.header.get_intent()[0] == "label"
    ext = nib.load(str(tmp_path / "anomaly_maps.nii.gz")).header.extensions
    assert json.loads(ext[0].get_content())["components"] == list(ABNORMALITIES)
    ctbl = (tmp_path / "organs.ctbl").read_text().splitlines()
    assert "5 heart 229 115 115 255" in ctbl and ctbl[2] == "0 outside_body 0 0 0 0"
    snap = (tmp_path / "organs_itksnap.txt").read_text().splitlines()
    assert [ln.split()[-1] for ln in snap if not ln.startswith("#")] == [f'"{n}"' for n in ORGANS.values()]
