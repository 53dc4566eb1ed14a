"""params.yaml values are validated (type and range) at load, with the section and key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exact_ct.config import ConfigError, from_dict, section
from exact_ct.ingest import IngestConfig
from exact_ct.reports.batch import LabelConfig
from exact_ct.training.config import TrainConfig


@pytest.mark.parametrize(
    ("values", "key", "why"),
    [
        ({"workers": "two"}, "workers", "valid integer"),
        ({"max_quarantine_share": "lots"}, "max_quarantine_share", "valid number"),
        ({"min_slices": -5}, "min_slices", "greater than 0"),
        ({"max_quarantine_share": 1.5}, "max_quarantine_share", "less than or equal to 1"),
        ({"workers": 2.5}, "workers", "fractional part"),
        ({"require_report": "maybe"}, "require_report", "valid boolean"),
        ({"kernel_preference": ["lung", 3]}, "kernel_preference[1]", "valid string"),
    ],
)
def test_bad_ingest_values_name_the_key(values: dict, key: str, why: str, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"ingest": values}), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        section(IngestConfig, "ingest", params)
    msg = str(err.value)
    assert "'ingest'" in msg and f"key {key!r}" in msg and why in msg


def test_values_are_converted_to_the_field_types() -> None:
    cfg = from_dict(IngestConfig, {"workers": 3, "max_quarantine_share": 1, "kernel_preference": ["a"]})
    assert cfg.workers == 3 and isinstance(cfg.max_quarantine_share, float)
    assert cfg.kernel_preference == ("a",)


def test_other_sections_validated_too() -> None:
    with pytest.raises(ConfigError, match=r"'parse_reports'.*key 'workers'"):
        from_dict(LabelConfig, {"workers": 0}, "parse_reports")
    train = from_dict(TrainConfig, {"profiles": {"p": {"epochs": -1}}, "profile": "p"}, "train")
    with pytest.raises(ConfigError, match=r"train.profiles.p.*key 'epochs'"):
        train.active()
    with pytest.raises(ConfigError, match=r"train.profiles.p.network.*key 'channels"):
        from_dict(
            TrainConfig, {"profiles": {"p": {"network": {"channels": ["x"]}}}, "profile": "p"}, "train"
        ).active()


def test_the_repository_params_load() -> None:
    root = Path(__file__).resolve().parents[2]
    for cls, name in ((IngestConfig, "ingest"), (LabelConfig, "parse_reports"), (TrainConfig, "train")):
        section(cls, name, root / "params.yaml")
