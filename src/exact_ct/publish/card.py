"""Model card (markdown) and the MONAI bundle configs (``configs/metadata.json``, ``configs/inference.json``)
of one registry version.

A registry version folder is a MONAI bundle: ``monai.bundle.run(run_id="run", bundle_root=DIR,
config_file=DIR/configs/inference.json, meta_file=DIR/configs/metadata.json, input=STUDY, output_dir=OUT)``
loads the package (``network_def`` is the network with its weights) and runs ``exact infer`` on STUDY.

Both are built from the package manifest, the evaluation metrics and the gate decision only: no
patient identifier, study id or report text can reach them.
"""

from __future__ import annotations

from importlib import metadata as importlib_metadata
from typing import Any

from exact_ct.schema import ABNORMALITIES, ORGANS

INTENDED_USE = (
    "Research and method development on chest CT: study-level probabilities for 18 CT-RATE abnormalities, "
    "organ segmentation (10 classes) and organ-confined voxel-level anomaly maps that explain them. "
    "Intended users are ML engineers and researchers; outputs may be shown to radiologists as decision "
    "support in studies, never as a diagnosis."
)
LIMITS = (
    "Not a medical device; not validated for clinical use.",
    "Trained from report-derived (weak) labels: report omissions and hedges are label noise.",
    "Organ supervision comes from pseudo masks (intensity thresholds or TotalSegmentator), not experts.",
    "Adult chest CT only; other body regions, paediatric scans and heavy artefacts are out of scope.",
    "Grounded-report lobes are approximated by position inside the lung (no fissure segmentation).",
)
GENERIC_FAILURE_MODES = (
    "Findings outside the abnormality's organ region are invisible by design (organ confinement); an organ "
    "segmentation error therefore hides or displaces findings.",
    "Thresholds were fixed on a small validation split; sensitivity and specificity on new sites will differ.",
    "Synthetic demo data: metrics on it say nothing about real scans.",
)


def _pkg_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return ""


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def failure_modes(metrics: dict[str, Any], weak_auroc: float = 0.7, ece_high: float = 0.1) -> list[str]:
    """Failure modes read off the evaluation, then the generic ones."""
    out: list[str] = []
    per = metrics.get("diagnosis", {}).get("per_abnormality", {})
    weak = [
        n for n in ABNORMALITIES if per.get(n, {}).get("auroc") is not None and per[n]["auroc"] < weak_auroc
    ]
    untested = [n for n in ABNORMALITIES if per.get(n, {}).get("auroc") is None]
    if weak:
        out.append(f"Weak discrimination (test AUROC < {weak_auroc}): {', '.join(weak)}.")
    if untested:
        out.append(f"Not evaluable (no positives or no negatives in the test split): {', '.join(untested)}.")
    ece = metrics.get("diagnosis", {}).get("macro", {}).get("ece")
    if ece is not None and ece > ece_high:
        out.append(
            f"Probabilities are poorly calibrated (ECE {ece:.3f}); use the thresholds, not the raw values."
        )
    loc = metrics.get("localization", {}).get("overall", {})
    if loc.get("findings") and loc.get("hit") is not None and loc["hit"] < 0.5:
        out.append(f"Maps often miss the lesion (HIT {loc['hit']:.2f} over {loc['findings']} findings).")
    return out + list(GENERIC_FAILURE_MODES)


def model_card(
    version: str,
    manifest: dict[str, Any],
    metrics: dict[str, Any],
    decision: dict[str, Any],
    params: dict[str, Any],
) -> str:
    """The model card in markdown."""
    diag = metrics.get("diagnosis", {})
    macro = diag.get("macro", {})
    ci = macro.get("auroc_ci")
    lines = [
        " ".join(["# EXACT-CT model", *([str(manifest["name"])] if manifest.get("name") else []), version]),
        "",
        "## Model details",
        *([f"- Name: {manifest['name']} (params `train.model_name`)"] if manifest.get("name") else []),
        f"- Version: {version} (semantic; registry `models/registry/{version}/`)",
        f"- Architecture: EXACT-style shared 3D encoder, organ decoder ({len(ORGANS)} classes) and anomaly decoder "
        f"({len(ABNORMALITIES)} maps) with organ-confined top-k MIL pooling; network `{manifest.get('network')}`",
        f"- Pooling: `{manifest.get('pooling')}`",
        f"- Input grid: `{manifest.get('preprocessing')}`",
        f"- Data version: `{manifest.get('data_version', '')}`",
        f"- Source revision: `{decision.get('candidate', {}).get('git_revision') or 'unknown (not a git checkout)'}` "
        f"(the git commit the run started from; `exact retrain` tags the commit that records this version "
        f"`exact-ct@v{version}` (params `retrain.artifact`): check it out and `dvc pull` to get this model)",
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## Limits",
        *[f"- {x}" for x in LIMITS],
        "",
        "## Evaluation (test split)",
        f"Reference labels: {metrics.get('label_source')}; {metrics.get('studies', {}).get('test')} test studies; thresholds "
        f"fixed on the validation split ({metrics.get('studies', {}).get('val')} studies, {metrics.get('threshold_method')}); "
        f"{metrics.get('bootstrap')} bootstrap replicates for {int(100 * float(metrics.get('ci', 0.95)))} % intervals.",
        "",
        f"Macro AUROC {_fmt(macro.get('auroc'))}"
        + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        + f", AUPRC {_fmt(macro.get('auprc'))}, F1 {_fmt(macro.get('f1'))}, sensitivity {_fmt(macro.get('sensitivity'))}, "
        f"specificity {_fmt(macro.get('specificity'))}, ECE {_fmt(macro.get('ece'))}.",
        "",
        "| abnormality | AUROC [95% CI] | AUPRC | F1 | sensitivity | specificity | threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ABNORMALITIES:
        e = diag.get("per_abnormality", {}).get(name, {})
        c = e.get("auroc_ci")
        lines.append(
            f"| {name} | {_fmt(e.get('auroc'))}{f' [{c[0]:.3f}, {c[1]:.3f}]' if c else ''} | {_fmt(e.get('auprc'))} | "
            f"{_fmt(e.get('f1'))} | {_fmt(e.get('sensitivity'))} | {_fmt(e.get('specificity'))} | {_fmt(e.get('threshold'))} |"
        )
    loc = metrics.get("localization", {}).get("overall", {})
    gr = metrics.get("grounded_report", {})
    od = metrics.get("organ_dice", {})
    lines += [
        "",
        f"Localization: {loc.get('findings', 0)} findings with lesion masks; pointing game {_fmt(loc.get('pointing_game'))}, "
        f"top-k % Dice {_fmt(loc.get('dice_topk'))}, HIT {_fmt(loc.get('hit'))}.",
        "Organ Dice: " + ", ".join(f"{k} {_fmt(v.get('mean'))}" for k, v in od.items()) + ".",
        f"Grounded reports re-labelled by the report labeller: macro F1 {_fmt(gr.get('macro_f1'))}, micro F1 {_fmt(gr.get('micro_f1'))}.",
        "",
        "## Known failure modes",
        *[f"- {x}" for x in failure_modes(metrics)],
        "",
        "## Release decision",
        f"{decision.get('reason', '')}",
        "",
        "## Parameters",
        "```json",
        _json(params),
        "```",
        "",
        "## Privacy",
        "Trained on pseudonymised data (keyed hashes of ids); this card holds aggregate numbers only, "
        "no patient identifier, study id or report text.",
        "",
    ]
    return "\n".join(lines)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True, default=str)


#: MONAI's bundle metadata schema (``monai.bundle.verify_metadata`` downloads it to check the file).
META_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)


def inference_config() -> dict[str, Any]:
    """``configs/inference.json``: a MONAI bundle config whose ``run`` is ``exact infer`` on ``@input``.

    ``network_def`` is the loaded network (weights from ``weights.pt``), so MONAI tools that build the
    network from the bundle get the trained model; the pre- and post-processing are exact_ct's own (ingest
    QC, grid resampling, HU windows, organ confinement), which MONAI transforms do not express.
    """
    return {
        "imports": [
            "$import pathlib",
            "$from exact_ct.model.package import load_package",
            "$from exact_ct.evaluation.infer import run_infer",
        ],
        "bundle_root": ".",
        "device": "cpu",
        "input": "",
        "output_dir": "$@bundle_root + '/eval'",
        "package": "$load_package(@bundle_root, @device)",
        "network_def": "$@package.net",
        "network": "$@network_def.to(@device)",
        "initialize": [],
        "run": [
            "$run_infer(pathlib.Path(@input), pathlib.Path(@bundle_root), pathlib.Path(@output_dir), "
            "package=@package, device=@device)"
        ],
        "finalize": [],
    }


def _input_channels(plan: dict[str, Any]) -> dict[str, str]:
    windows = plan.get("windows_hu") or []
    if not windows:
        return {"0": "CT in HU clipped to clip_hu, z-scored with mean_hu / std_hu"}
    return {str(i): f"CT window [{lo:g}, {hi:g}] HU scaled to [-1, 1]" for i, (lo, hi) in enumerate(windows)}


def bundle_metadata(
    version: str, manifest: dict[str, Any], metrics: dict[str, Any], changelog: dict[str, str]
) -> dict[str, Any]:
    """``configs/metadata.json`` with the keys MONAI's bundle metadata schema requires.

    ``network_data_format`` describes the network's tensors: its input is the CT resampled to the model
    grid with one channel per HU window, its outputs are logits; the study-level files ``exact infer``
    writes are listed under ``exact_infer_outputs``.
    """
    plan = manifest.get("preprocessing", {})
    macro = metrics.get("diagnosis", {}).get("macro", {})
    channels = _input_channels(plan)
    return {
        "schema": META_SCHEMA,
        "version": version,
        "changelog": changelog,
        "monai_version": _pkg_version("monai"),
        "pytorch_version": _pkg_version("torch"),
        "numpy_version": _pkg_version("numpy"),
        "required_packages_version": {
            "nibabel": _pkg_version("nibabel"),
            "exact-ct": _pkg_version("exact-ct"),
        },
        "name": (f"{manifest['name']}: " if manifest.get("name") else "")
        + "EXACT-CT anomaly-aware chest CT model",
        "task": "Chest CT: organ segmentation, 18-abnormality classification and organ-confined anomaly maps",
        "description": INTENDED_USE,
        "authors": "EXACT-CT pipeline",
        "copyright": "see the repository licence",
        "data_source": f"pseudonymised hospital chest CT with reports, data version {manifest.get('data_version', '')}",
        "data_type": "nifti",
        "image_classes": f"CT resampled to the model grid, {len(channels)} channel(s): "
        + "; ".join(channels.values()),
        "label_classes": {str(k): v for k, v in ORGANS.items()},
        "pred_classes": list(ABNORMALITIES),
        "eval_metrics": {
            "macro_auroc": macro.get("auroc"),
            "macro_auroc_ci": macro.get("auroc_ci"),
            "macro_f1": macro.get("f1"),
        },
        "intended_use": INTENDED_USE,
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": len(channels),
                    "spatial_shape": plan.get("size_xyz"),
                    "dtype": "float32",
                    "value_range": [-1, 1] if plan.get("windows_hu") else [],
                    "is_patch_data": False,
                    "channel_def": channels,
                }
            },
            "outputs": {
                "organ_logits": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(ORGANS),
                    "spatial_shape": plan.get("size_xyz"),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(k): v for k, v in ORGANS.items()},
                },
                "anomaly_logits_full": {
                    "type": "image",
                    "format": "logits",
                    "num_channels": len(ABNORMALITIES),
                    "spatial_shape": plan.get("size_xyz"),
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {str(i): n for i, n in enumerate(ABNORMALITIES)},
                },
            },
        },
        "exact_infer_outputs": {
            "probabilities.json": "study-level probability, threshold and findings of each abnormality",
            "organs.nii.gz": "organ label map (ids above) on the study's canonical grid, names in the header",
            "anomaly_maps.nii.gz": "(x, y, z, 18) organ-confined anomaly maps, components named in the header",
            "organs.ctbl / organs_itksnap.txt": "label tables for 3D Slicer / ITK-SNAP",
            "report.md": "grounded report",
            "overlay.png": "slices through each positive finding",
        },
    }
