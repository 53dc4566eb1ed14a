"""Self-contained HTML evaluation report: no script, no CDN, every image embedded as a base64 data URI."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exact_ct.io import write_text_atomic
from exact_ct.schema import ABNORMALITIES

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.na{color:#999}.card{display:inline-block;vertical-align:top;width:560px;margin:8px;
border:1px solid #ddd;padding:8px}.card pre{white-space:pre-wrap;font-size:11px;background:#fafafa;padding:6px}
img{max-width:100%}.note{font-size:12px;color:#555}
"""


def data_uri(path: str | os.PathLike[str]) -> str:
    """A PNG file as a ``data:`` URI (the report then needs no file beside it)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return '<span class="na">n/a</span>'
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _ci(v: Any, ci: Any) -> str:
    if v is None:
        return _fmt(None)
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _diagnosis_table(diag: dict[str, Any]) -> str:
    head = "<tr><th class=l>abnormality</th><th>pos</th><th>neg</th><th>AUROC [95% CI]</th><th>AUPRC</th><th>threshold (val)</th><th>F1</th><th>sensitivity</th><th>specificity</th><th>ECE</th></tr>"
    rows = []
    for name in ABNORMALITIES:
        e = diag["per_abnormality"][name]
        rows.append(
            f"<tr><td class=l>{html.escape(name)}</td><td>{e['positives']}</td><td>{e['negatives']}</td>"
            f"<td>{_ci(e['auroc'], e['auroc_ci'])}</td><td>{_fmt(e['auprc'])}</td><td>{_fmt(e['threshold'])}</td>"
            f"<td>{_fmt(e['f1'])}</td><td>{_fmt(e['sensitivity'])}</td><td>{_fmt(e['specificity'])}</td><td>{_fmt(e['ece'])}</td></tr>"
        )
    m = diag["macro"]
    rows.append(
        f"<tr><th class=l>macro</th><th></th><th></th><th>{_ci(m['auroc'], m['auroc_ci'])}</th><th>{_fmt(m['auprc'])}</th><th></th>"
        f"<th>{_fmt(m['f1'])}</th><th>{_fmt(m['sensitivity'])}</th><th>{_fmt(m['specificity'])}</th><th>{_fmt(m['ece'])}</th></tr>"
    )
    return "<table>" + head + "".join(rows) + "</table>"


def _localization_table(loc: dict[str, Any]) -> str:
    per = loc.get("per_abnormality", {})
    if not per:
        return '<p class="note">No lesion masks in the test split: localization not measured.</p>'
    rows = [
        f"<tr><td class=l>{html.escape(n)}</td><td>{v['findings']}</td><td>{_fmt(v['pointing_game'])}</td>"
        f"<td>{_fmt(v['dice_topk'])}</td><td>{_fmt(v['hit'])}</td></tr>"
        for n, v in per.items()
    ]
    o = loc["overall"]
    rows.append(
        f"<tr><th class=l>all findings</th><th>{o['findings']}</th><th>{_fmt(o.get('pointing_game'))}</th>"
        f"<th>{_fmt(o.get('dice_topk'))}</th><th>{_fmt(o.get('hit'))}</th></tr>"
    )
    return (
        "<table><tr><th class=l>abnormality</th><th>findings</th><th>pointing game</th><th>top-k% Dice</th><th>HIT</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _organ_table(organ: dict[str, Any]) -> str:
    blocks = []
    for ref, v in organ.items():
        if not v or v.get("studies", 0) == 0:
            continue
        cells = "".join(f"<td>{_fmt(d)}</td>" for d in v["per_organ"].values())
        heads = "".join(f"<th>{html.escape(o)}</th>" for o in v["per_organ"])
        blocks.append(
            f"<p>against {html.escape(ref)} ({v['studies']} studies), mean {_fmt(v['mean'])}</p>"
            f"<table><tr>{heads}</tr><tr>{cells}</tr></table>"
        )
    return "".join(blocks) or '<p class="note">No organ reference available.</p>'


def render(
    metrics: dict[str, Any],
    figures: dict[str, str | os.PathLike[str]],
    gallery: Sequence[dict[str, Any]],
    title: str = "EXACT-CT evaluation",
) -> str:
    """The whole page as a string. ``gallery`` items: study_id, montage (PNG path), report (text)."""
    diag = metrics["diagnosis"]
    gr = metrics.get("grounded_report", {})
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=note>Model {html.escape(str(metrics.get('model_version', '')))}, data version "
        f"{html.escape(str(metrics.get('data_version', ''))[:12])}; test split: {metrics['studies']['test']} studies, "
        f"thresholds chosen on the validation split ({metrics['studies']['val']} studies, method "
        f"{html.escape(str(metrics['threshold_method']))}); reference labels: {html.escape(str(metrics['label_source']))}; "
        f"intervals: {metrics['bootstrap']} bootstrap replicates of studies.</p>",
        "<h2>Diagnosis</h2>",
        _diagnosis_table(diag),
    ]
    for key, caption in (
        ("roc", "ROC curves"),
        ("pr", "Precision-recall curves"),
        ("calibration", "Calibration"),
    ):
        if key in figures:
            parts.append(
                f"<figure><img alt='{caption}' src='{data_uri(figures[key])}'><figcaption class=note>{caption}</figcaption></figure>"
            )
    parts += ["<h2>Localization</h2>", _localization_table(metrics.get("localization", {}))]
    parts += ["<h2>Organ Dice</h2>", _organ_table(metrics.get("organ_dice", {}))]
    parts += [
        "<h2>Grounded reports</h2>",
        f"<p>Generated reports re-labelled by our report labeller: macro F1 {_fmt(gr.get('macro_f1'))}, micro F1 "
        f"{_fmt(gr.get('micro_f1'))} against the reference labels; templates read back as intended in "
        f"{_fmt(gr.get('roundtrip_agreement'))} of {gr.get('statements', 0)} statements.</p>",
    ]
    parts.append("<h2>Gallery</h2>")
    for item in gallery:
        parts.append(
            f"<div class=card><b>{html.escape(item['study_id'])}</b>"
            f"<img alt='montage {html.escape(item['study_id'])}' src='{data_uri(item['montage'])}'>"
            f"<pre>{html.escape(item['report'])}</pre></div>"
        )
    parts.append("</body></html>\n")
    return "".join(parts)


def write_html_report(path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Path:
    """Render and write atomically; returns the path."""
    write_text_atomic(path, render(*args, **kwargs))
    return Path(path)
