"""The publish stage's library: gate the candidate against the champion, register it, record the decision.

Two files are written whatever the outcome: ``reports/publish/decision.json`` (the decision, the reason,
the candidate's weights hash, the version it got, and every metric difference) and
``reports/publish/metrics.json``, the pipeline's headline metrics (a handful of numbers: the columns
``dvc metrics show`` and ``dvc exp show`` display by default; the full evaluation stays in
``reports/evaluate/metrics.json``).
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from exact_ct.io import sha256_file, write_json_atomic
from exact_ct.publish import card
from exact_ct.publish.config import PublishConfig
from exact_ct.publish.gate import gate
from exact_ct.publish.registry import Registry
from exact_ct.schema import ABNORMALITIES

log = logging.getLogger(__name__)


def _auroc_of(metrics: dict[str, Any]) -> tuple[dict[str, float | None], float | None]:
    diag = metrics.get("diagnosis", {})
    per = {n: diag.get("per_abnormality", {}).get(n, {}).get("auroc") for n in ABNORMALITIES}
    return per, diag.get("macro", {}).get("auroc")


def git_revision(cwd: Path | None = None) -> str | None:
    """The git commit checked out where the stage runs (DVC runs stages at the repository root), if any.

    It names the code, ``dvc.yaml`` and ``params.yaml`` the run started from; the retrain flow's commit
    that records this run's ``dvc.lock`` (tagged for a published version) is its child.
    """
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def model_name(params_used: dict[str, Any] | None) -> str:
    """``train.model_name`` of the params the run used ('' when absent)."""
    train = (params_used or {}).get("train") or {}
    return str(train.get("model_name") or "") if isinstance(train, dict) else ""


def headline(metrics: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics: the candidate's test macro figures, the gate's comparison and outcome."""
    macro = metrics.get("diagnosis", {}).get("macro", {})
    diff = (record.get("differences") or {}).get("macro_auroc") or {}
    return {
        "test_macro_auroc": macro.get("auroc"),
        "test_macro_auprc": macro.get("auprc"),
        "test_macro_f1": macro.get("f1"),
        "test_ece": macro.get("ece"),
        "test_studies": _test_studies(metrics),
        "champion_macro_auroc": diff.get("champion"),
        "macro_auroc_delta": diff.get("delta"),
        "promoted": bool(record.get("promoted")),
    }


def _write(out: Path, record: dict[str, Any], metrics: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "decision.json", record)
    write_json_atomic(out / "metrics.json", headline(metrics, record))


def rescore(
    package_dir: Path, dataset_dir: Path, label_source: str, device: str = "cpu"
) -> tuple[dict[str, float | None], float | None]:
    """AUROC per abnormality and macro of a registered model on the dataset's current test split."""
    from exact_ct.dataset.build import load_index
    from exact_ct.evaluation import metrics as M
    from exact_ct.evaluation.pipeline import predict_probs, reference
    from exact_ct.model.package import load_package

    pkg = load_package(package_dir, device)
    index = load_index(dataset_dir)
    rows = index[index["split"] == "test"].reset_index(drop=True)
    ref = reference(rows, label_source)
    p = predict_probs(rows, dataset_dir, pkg, device)
    per = {n: M.auroc(ref.y[ref.valid[:, j], j], p[ref.valid[:, j], j]) for j, n in enumerate(ABNORMALITIES)}
    return per, M.macro(per)


def publish(
    cfg: PublishConfig,
    candidate_dir: Path,
    metrics_path: Path,
    registry_dir: Path,
    out: Path,
    *,
    dataset_dir: Path | None = None,
    params_used: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Gate, register when promoted, and write ``out/decision.json``. Returns the decision record."""
    candidate_dir, registry_dir, out = Path(candidate_dir), Path(registry_dir), Path(out)
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    manifest = json.loads((candidate_dir / "package.json").read_text(encoding="utf-8"))
    name = model_name(params_used)
    if name:
        manifest["name"] = name  # the published package's name (params train.model_name)
    weights_sha = sha256_file(candidate_dir / "weights.pt")
    reg = Registry(registry_dir)
    champion = reg.champion()
    cand_per, cand_macro = _auroc_of(metrics)

    revision = git_revision()
    record: dict[str, Any] = {
        "candidate": {
            "weights_sha256": weights_sha,
            "data_version": manifest.get("data_version", ""),
            "package_version": manifest.get("version", ""),
            "git_revision": revision,
        },
        "champion": champion,
        "tolerances": {
            "max_macro_drop": cfg.max_macro_drop,
            "max_label_drop": cfg.max_label_drop,
            "min_macro_auroc": cfg.min_macro_auroc,
            "min_test_studies": cfg.min_test_studies,
        },
    }
    existing = reg.find_weights(weights_sha)
    if existing is not None:  # rerunning publish on the same model must not mint a new version
        record.update(
            status="unchanged",
            promoted=False,
            version=existing,
            reason=f"unchanged: these weights are already version {existing}",
            comparison="none",
        )
        _write(out, record, metrics)
        log.info("publish: candidate already registered as %s", existing)
        return record

    champ_per: dict[str, float | None] | None = None
    champ_macro: float | None = None
    if champion is not None:
        comparison = "stored metrics of the champion"
        if cfg.rescore_champion and dataset_dir is not None:
            try:
                champ_per, champ_macro = rescore(
                    reg.path(champion), Path(dataset_dir), str(metrics.get("label_source", "report"))
                )
                comparison = "champion re-scored on the candidate's test split"
            except (
                ValueError,
                KeyError,
                RuntimeError,
            ) as e:  # e.g. schema changed: the old package no longer loads
                log.warning(
                    "publish: cannot re-score champion %s (%s); comparing with its stored metrics",
                    champion,
                    e,
                )
        if champ_per is None:
            champ_per, champ_macro = _auroc_of(reg.metrics(champion))
        record["comparison"] = comparison
    decision = gate(
        cand_per,
        cand_macro,
        champ_per,
        champ_macro,
        max_macro_drop=cfg.max_macro_drop,
        max_label_drop=cfg.max_label_drop,
        min_macro_auroc=cfg.min_macro_auroc,
        min_test_studies=cfg.min_test_studies,
        test_studies=_test_studies(metrics),
    )
    record.update(
        promoted=decision.promote,
        reason=decision.reason,
        differences={"macro_auroc": decision.macro, "auroc": decision.per_abnormality},
        failures=list(decision.failures),
    )

    record["status"] = ("first" if champion is None else "promoted") if decision.promote else "rejected"
    if decision.promote:
        version, kind = reg.next_version(manifest, cfg.first_version)
        changelog = {v["version"]: v.get("note", "") for v in reg.index()["versions"]}
        note = f"{kind}: macro AUROC {_f(cand_macro)}" + (
            f" (champion {champion}: {_f(champ_macro)})" if champion else ""
        )
        changelog[version] = note
        files = {
            "model_card.md": card.model_card(
                version, manifest, metrics, record, params_used or manifest.get("params", {})
            ),
            "configs/inference.json": json.dumps(card.inference_config(), indent=2, sort_keys=True) + "\n",
            "configs/metadata.json": json.dumps(
                card.bundle_metadata(version, manifest, metrics, changelog),
                indent=2,
                sort_keys=True,
                default=_np,
            )
            + "\n",
            "metrics.json": json.dumps(metrics, indent=2, sort_keys=True) + "\n",
        }
        reg.add(
            version,
            candidate_dir,
            files,
            {
                "weights_sha256": weights_sha,
                "data_version": manifest.get("data_version", ""),
                "bump": kind,
                "macro_auroc": cand_macro,
                "note": note,
                "git_revision": revision,
            },
            provenance={"git_revision": revision, **({"name": name} if name else {})},
        )
        reg.set_champion(version)
        record.update(version=version, bump=kind)
        log.info("publish: promoted as %s (%s)", version, decision.reason)
    else:
        record["version"] = None
        log.info("publish: %s", decision.reason)
    _write(out, record, metrics)
    return record


def _test_studies(metrics: dict[str, Any]) -> int | None:
    n = metrics.get("studies", {}).get("test")
    return None if n is None else int(n)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _np(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)
