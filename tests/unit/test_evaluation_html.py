"""The HTML evaluation report is self-contained and renders offline in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from exact_ct.evaluation import explain, grounded, metrics, plots
from exact_ct.evaluation.html import render
from exact_ct.schema import ABNORMALITIES

CHROMIUM = "/usr/bin/chromium"
# Networking-free: no background services, and every proxied request goes to a closed local port.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-extensions",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-sync",
    "--proxy-server=127.0.0.1:9",
    "--enable-logging=stderr",
]


def _chromium() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        pytest.fail("headless Chromium not found: install the Debian package `chromium` (/usr/bin/chromium)")
    return path


def _report(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(30, len(ABNORMALITIES)))
    p = np.clip(0.4 * y + 0.6 * rng.random(y.shape), 0, 1)
    diag = metrics.diagnosis_metrics(y, p, None, y, p, None, ABNORMALITIES, n_boot=50)
    figs = plots.curve_pngs(tmp / "figures", diag["curves"], diag["per_abnormality"])
    organs = np.full((20, 20, 12), 9, np.uint8)
    organs[3:9, 4:16, 1:11] = 1
    organs[11:17, 4:16, 1:11] = 2
    hu = np.where(np.isin(organs, (1, 2)), -850, 30).astype(np.int16)
    maps = np.zeros((*organs.shape, len(ABNORMALITIES)), np.float32)
    maps[12:15, 6:9, 6:9, ABNORMALITIES.index("Lung nodule")] = 0.9
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    probs = {n: 0.9 if n == "Lung nodule" else 0.01 for n in ABNORMALITIES}
    rep = grounded.build_report(probs, dict.fromkeys(ABNORMALITIES, 0.5), maps, organs, aff)
    png = explain.montage(tmp / "s1" / "montage.png", hu, organs, maps, aff, rep.findings, probs)
    m = {
        "diagnosis": {"per_abnormality": diag["per_abnormality"], "macro": diag["macro"]},
        "studies": {"val": 30, "test": 30},
        "threshold_method": "youden",
        "label_source": "truth",
        "bootstrap": 50,
        "localization": {
            "per_abnormality": {
                "Lung nodule": {"findings": 1, "pointing_game": 1.0, "dice_topk": 0.5, "hit": 1.0}
            },
            "overall": {"findings": 1, "pointing_game": 1.0, "dice_topk": 0.5, "hit": 1.0},
        },
        "organ_dice": {},
        "grounded_report": {"macro_f1": 0.5, "micro_f1": 0.5, "roundtrip_agreement": 1.0, "statements": 18},
    }
    html = render(m, figs, [{"study_id": "s-0001", "montage": png, "report": rep.text}])
    out = tmp / "index.html"
    out.write_text(html, encoding="utf-8")
    return out


def test_report_references_nothing_outside_itself(tmp_path: Path) -> None:
    html = _report(tmp_path).read_text(encoding="utf-8")
    assert not re.search(r"https?://", html), "the report must not reference any http(s) URL"
    srcs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in html.lower()
    assert "Lung nodule" in html and "right" in html  # the gallery's grounded report is there


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    page = _report(tmp_path)
    # A copy with a probe appended: the DOM dump then says whether every image decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text(encoding="utf-8").replace(
            "</body>",
            "<script>document.body.setAttribute('data-images',"
            "Array.from(document.images).map(i=>i.complete&&i.naturalWidth>0?'ok':'broken').join(','));</script></body>",
        ),
        encoding="utf-8",
    )
    res = subprocess.run(
        [chromium, *FLAGS, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'data-images="([^"]*)"', res.stdout)
    assert m, "Chromium did not run the page"
    states = m.group(1).split(",")
    assert len(states) == 3 and set(states) == {"ok"}, states  # ROC, PR and the one montage, all decoded
    assert "<table>" in res.stdout and "Pointing game".lower() in res.stdout.lower()
    assert "ERR_" not in res.stderr and "Failed to load resource" not in res.stderr
