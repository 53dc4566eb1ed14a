"""Champion/challenger gate, registry versioning and the publish decision record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from exact_ct.dataset.grid import GridPlan
from exact_ct.model.config import NetworkConfig, PoolingConfig
from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage, save_package
from exact_ct.publish.config import PublishConfig
from exact_ct.publish.gate import gate
from exact_ct.publish.pipeline import publish
from exact_ct.publish.registry import Registry, bump, parse_version
from exact_ct.schema import ABNORMALITIES

CFG = PublishConfig(
    max_macro_drop=0.02,
    max_label_drop=0.05,
    rescore_champion=False,
    min_macro_auroc=0.0,
    min_test_studies=0,
)


WINDOWS = ((-1024.0, -600.0), (-1000.0, 200.0), (-160.0, 240.0), (100.0, 1100.0))


def _package(
    folder: Path, seed: int, *, data_version: str = "d1", channels: tuple[int, ...] = (4, 8)
) -> Path:
    torch.manual_seed(seed)
    net = NetworkConfig(channels=channels)
    pkg = ModelPackage(
        ExactNet(net, in_channels=len(WINDOWS)),
        net,
        PoolingConfig(),
        GridPlan((8.0, 8.0, 8.0), (16, 16, 16), windows_hu=WINDOWS),
        version="0.1.0",
        data_version=data_version,
    )
    return save_package(pkg, folder)


def _metrics(path: Path, auroc: dict[str, float | None]) -> Path:
    defined = [v for v in auroc.values() if v is not None]
    m = {
        "label_source": "truth",
        "studies": {"val": 5, "test": 5},
        "diagnosis": {
            "per_abnormality": {n: {"auroc": auroc.get(n), "auroc_ci": None} for n in ABNORMALITIES},
            "macro": {"auroc": sum(defined) / len(defined) if defined else None, "auroc_ci": None},
        },
    }
    path.write_text(json.dumps(m))
    return path


BASE = {n: 0.8 for n in ABNORMALITIES[:4]}


def test_gate_first_model_promote_and_reject() -> None:
    first = gate(BASE, 0.8, None, None, max_macro_drop=0.02, max_label_drop=0.05)
    assert first.promote and "first" in first.reason
    small = {**BASE, ABNORMALITIES[0]: 0.76}  # label drop 0.04, macro drop 0.01: within tolerance
    d = gate(small, 0.79, BASE, 0.8, max_macro_drop=0.02, max_label_drop=0.05)
    assert d.promote and d.per_abnormality[ABNORMALITIES[0]]["delta"] == pytest.approx(-0.04)
    label = {**BASE, ABNORMALITIES[1]: 0.7}  # one label drops 0.1
    d = gate(label, 0.795, BASE, 0.8, max_macro_drop=0.02, max_label_drop=0.05)
    assert not d.promote and len(d.failures) == 1 and ABNORMALITIES[1] in d.failures[0]
    d = gate(BASE, 0.75, BASE, 0.8, max_macro_drop=0.02, max_label_drop=0.05)
    assert not d.promote and "macro" in d.failures[0]
    # an abnormality undefined for one model never decides
    d = gate({**BASE, ABNORMALITIES[5]: 0.1}, 0.8, BASE, 0.8, max_macro_drop=0.02, max_label_drop=0.05)
    assert d.promote and d.per_abnormality[ABNORMALITIES[5]]["delta"] is None


def test_semver_helpers() -> None:
    assert (
        bump("0.1.0", "minor") == "0.2.0"
        and bump("0.2.3", "patch") == "0.2.4"
        and bump("0.2.3", "major") == "1.0.0"
    )
    with pytest.raises(ValueError):
        parse_version("1.0")


def test_publish_registers_versions_and_records_every_decision(tmp_path: Path) -> None:
    reg_dir, out = tmp_path / "registry", tmp_path / "publish"
    c1 = _package(tmp_path / "c1", 1)
    d1 = publish(CFG, c1, _metrics(tmp_path / "m1.json", BASE), reg_dir, out)
    assert d1["status"] == "first" and d1["version"] == "0.1.0"
    reg = Registry(reg_dir)
    assert reg.champion() == "0.1.0"
    v = reg.path("0.1.0")
    assert {p.name for p in v.iterdir()} == {
        "weights.pt",
        "package.json",
        "model_card.md",
        "configs",
        "metrics.json",
    }
    assert (v / "weights.pt").read_bytes() == (c1 / "weights.pt").read_bytes()
    card = (v / "model_card.md").read_text()
    for section in ("Intended use", "Limits", "Known failure modes", "Data version", "Parameters"):
        assert section in card
    meta = json.loads((v / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.1.0" and meta["schema"].startswith("https://")
    assert meta["network_data_format"]["outputs"]["anomaly_logits_full"]["num_channels"] == 18
    # the declared input channels are the ones the weights take (was 1 for a 4-window model)
    state = torch.load(v / "weights.pt", weights_only=True)
    first_conv = next(t for k, t in state.items() if k.endswith("weight") and t.ndim == 5)
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == first_conv.shape[1] == 4
    assert json.loads((out / "decision.json").read_text())["version"] == "0.1.0"

    # the same weights again: nothing new is minted
    again = publish(CFG, c1, _metrics(tmp_path / "m1b.json", BASE), reg_dir, out)
    assert again["status"] == "unchanged" and reg.versions() == ["0.1.0"]

    # same data, new weights, within tolerance -> patch bump
    d2 = publish(
        CFG,
        _package(tmp_path / "c2", 2),
        _metrics(tmp_path / "m2.json", {**BASE, ABNORMALITIES[0]: 0.79}),
        reg_dir,
        out,
    )
    assert d2["status"] == "promoted" and d2["version"] == "0.1.1" and reg.champion() == "0.1.1"

    # new data version -> minor bump
    d3 = publish(
        CFG,
        _package(tmp_path / "c3", 3, data_version="d2"),
        _metrics(tmp_path / "m3.json", BASE),
        reg_dir,
        out,
    )
    assert d3["version"] == "0.2.0"

    # a worse challenger is rejected, the champion stays, the differences are recorded
    worse = {**BASE, ABNORMALITIES[2]: 0.6}
    d4 = publish(
        CFG,
        _package(tmp_path / "c4", 4, data_version="d2"),
        _metrics(tmp_path / "m4.json", worse),
        reg_dir,
        out,
    )
    assert d4["status"] == "rejected" and d4["version"] is None and reg.champion() == "0.2.0"
    rec = json.loads((out / "decision.json").read_text())
    assert rec["differences"]["auroc"][ABNORMALITIES[2]]["delta"] == pytest.approx(-0.2)
    assert reg.versions() == ["0.1.0", "0.1.1", "0.2.0"]

    # a different network -> major bump
    d5 = publish(
        CFG,
        _package(tmp_path / "c5", 5, data_version="d2", channels=(4, 8, 16)),
        _metrics(tmp_path / "m5.json", BASE),
        reg_dir,
        out,
    )
    assert d5["version"] == "1.0.0"
    changelog = json.loads((reg.path("1.0.0") / "configs" / "metadata.json").read_text())["changelog"]
    assert list(changelog) == ["0.1.0", "0.1.1", "0.2.0", "1.0.0"]


def test_publish_is_deterministic(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "c", 1)
    m = _metrics(tmp_path / "m.json", BASE)
    for name in ("a", "b"):
        publish(CFG, pkg, m, tmp_path / name / "registry", tmp_path / name / "out")
    for rel in (
        "registry/registry.json",
        "registry/champion.json",
        "registry/0.1.0/model_card.md",
        "registry/0.1.0/configs/metadata.json",
        "registry/0.1.0/configs/inference.json",
        "out/decision.json",
    ):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_quality_floor_blocks_even_the_first_model(tmp_path: Path) -> None:
    weak = gate(BASE, 0.333, None, None, max_macro_drop=0.02, max_label_drop=0.05, min_macro_auroc=0.5)
    assert not weak.promote and "min_macro_auroc" in weak.reason
    few = gate(
        BASE, 0.9, None, None, max_macro_drop=0.02, max_label_drop=0.05, min_test_studies=10, test_studies=2
    )
    assert not few.promote and "2 test studies < min_test_studies 10" in few.reason
    undefined = gate({}, None, None, None, max_macro_drop=0.02, max_label_drop=0.05, min_macro_auroc=0.5)
    assert not undefined.promote
    floor = PublishConfig(rescore_champion=False, min_macro_auroc=0.5, min_test_studies=3)
    c1 = _package(tmp_path / "c1", 1)
    reg_dir = tmp_path / "registry"
    low = {n: 0.333 for n in ABNORMALITIES[:4]}
    d = publish(floor, c1, _metrics(tmp_path / "m.json", low), reg_dir, tmp_path / "out")
    assert d["status"] == "rejected" and d["version"] is None and "quality floor" in d["reason"]
    assert Registry(reg_dir).champion() is None and d["tolerances"]["min_macro_auroc"] == 0.5
    ok = publish(floor, c1, _metrics(tmp_path / "m2.json", BASE), reg_dir, tmp_path / "out")
    assert ok["status"] == "first" and Registry(reg_dir).champion() == ok["version"]


def test_models_cli_lists_promotes_and_rolls_back(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from exact_ct.cli import main

    reg_dir = tmp_path / "registry"
    publish(CFG, _package(tmp_path / "c1", 1), _metrics(tmp_path / "m1.json", BASE), reg_dir, tmp_path / "o")
    publish(
        CFG,
        _package(tmp_path / "c2", 2, data_version="d2"),
        _metrics(tmp_path / "m2.json", BASE),
        reg_dir,
        tmp_path / "o",
    )
    reg = Registry(reg_dir)
    assert reg.versions() == ["0.1.0", "0.2.0"] and reg.champion() == "0.2.0"
    common = ["models", "--registry", str(reg_dir), "--repo", str(tmp_path)]
    assert main([*common, "list"]) == 0
    out = capsys.readouterr().out
    assert "* " in out and "0.2.0" in out and "0.8000" in out
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("*")] == ["0.2.0"]
    assert main([*common, "rollback"]) == 0 and reg.champion() == "0.1.0"
    assert main([*common, "rollback"]) == 2  # no earlier champion left
    assert "no earlier champion" in capsys.readouterr().err
    assert main([*common, "promote", "0.2.0"]) == 0 and reg.champion() == "0.2.0"
    assert main([*common, "promote", "9.9.9"]) == 2 and reg.champion() == "0.2.0"
    assert "not registered" in capsys.readouterr().err
    assert main([*common, "rollback"]) == 0 and reg.champion() == "0.1.0"


def test_a_registry_version_is_a_monai_bundle_monai_runs(tmp_path: Path) -> None:
    import numpy as np
    from monai.bundle import ConfigParser, run

    from exact_ct.io import save_nifti
    from tests.support.toy import toy_study

    reg_dir = tmp_path / "registry"
    publish(CFG, _package(tmp_path / "c1", 1), _metrics(tmp_path / "m.json", BASE), reg_dir, tmp_path / "o")
    bundle = Registry(reg_dir).path("0.1.0")
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser.read_meta(bundle / "configs" / "metadata.json")
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    weights = torch.load(bundle / "weights.pt", weights_only=True)
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())  # the trained weights
    hu, aff, _, _ = toy_study(np.random.default_rng(0), (32, 32, 24), 8.0, {"Lung nodule"})
    save_nifti(hu, aff, tmp_path / "study.nii.gz")
    run(
        run_id="run",
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(bundle),
        input=str(tmp_path / "study.nii.gz"),
        output_dir=str(tmp_path / "out"),
    )
    probs = json.loads((tmp_path / "out" / "probabilities.json").read_text())
    assert probs["model_version"] == "0.1.0" and set(probs["probabilities"]) == set(ABNORMALITIES)


def test_publish_writes_headline_metrics_and_records_name_and_git_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], cwd=repo, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(repo)  # DVC runs the stage at the repository root
    out, reg_dir = tmp_path / "out", tmp_path / "registry"
    used = {"train": {"model_name": "hospital-a"}}
    d = publish(
        CFG, _package(tmp_path / "c1", 1), _metrics(tmp_path / "m.json", BASE), reg_dir, out, params_used=used
    )
    assert d["candidate"]["git_revision"] == head
    manifest = Registry(reg_dir).manifest("0.1.0")
    assert manifest["git_revision"] == head and manifest["name"] == "hospital-a"
    assert Registry(reg_dir).index()["versions"][0]["git_revision"] == head
    card = (reg_dir / "0.1.0" / "model_card.md").read_text()
    assert card.startswith("# EXACT-CT model hospital-a 0.1.0\n") and head in card
    headline = json.loads((out / "metrics.json").read_text())
    assert headline == {
        "test_macro_auroc": 0.8,
        "test_macro_auprc": None,
        "test_macro_f1": None,
        "test_ece": None,
        "test_studies": 5,
        "champion_macro_auroc": None,
        "macro_auroc_delta": None,
        "promoted": True,
    }
    again = publish(CFG, _package(tmp_path / "c1", 1), _metrics(tmp_path / "m.json", BASE), reg_dir, out)
    assert (
        again["status"] == "unchanged" and json.loads((out / "metrics.json").read_text())["promoted"] is False
    )
