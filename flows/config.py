"""Typed configuration of the flows: params.yaml sections `retrain` and `demo`, validated at load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exact_ct.config import NonNegativeFloat, PositiveInt, Share, load_params, section


@dataclass(frozen=True)
class RetrainConfig:
    """The `retrain` section (the scheduled flow).

    Attributes:
        drift_threshold: flag an abnormality whose prevalence in a new batch moves more than this.
        skip_stages: dvc.yaml stages the flow leaves to `dvc repro` (downstream work such as finetune).
        settle_seconds: a drop written to less than this long ago is held for a later run.
        lock_timeout_seconds: how long a run waits for another live run's workspace lock, then fails.
        stage_timeout_seconds: a stage group running longer is stopped and the run fails (the Prefect
            task gets this as its timeout too).
        git_commit: end each run that changed anything with a git commit of what DVC and the flow
            wrote (dvc.lock, params.yaml, .dvc files, metrics), and a tag for a published version.
        artifact: the model's name in dvc.yaml's ``artifacts:``; a published version is tagged
            ``<artifact>@v<version>`` (the tag format of DVC's model registry).
    """

    drift_threshold: Share = 0.15
    skip_stages: tuple[str, ...] = ("finetune",)
    settle_seconds: NonNegativeFloat = 300.0
    lock_timeout_seconds: float = 3600.0
    stage_timeout_seconds: PositiveInt = 86400
    git_commit: bool = True
    artifact: str = "exact-ct"


@dataclass(frozen=True)
class DemoConfig:
    """The `demo` section (`make demo`): the seed and, in order, each batch's number of studies."""

    seed: int = 7
    batches: dict[str, PositiveInt] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.batches:
            raise ValueError("demo.batches is empty: name at least one batch and its number of studies")


def retrain_config(repo: Path) -> RetrainConfig:
    """The `retrain` section of ``<repo>/params.yaml`` (defaults when the section is absent)."""
    return section(RetrainConfig, "retrain", repo / "params.yaml")


def demo_config(repo: Path) -> DemoConfig:
    return section(DemoConfig, "demo", repo / "params.yaml")


def train_epochs(repo: Path) -> int | None:
    """Epochs of the active train profile, for the run's progress artifact (None when not set).

    Read through :func:`exact_ct.config.resolve_profile` rather than the training package's own typed
    config, whose import would pull torch into the flow process.
    """
    from pydantic import TypeAdapter, ValidationError

    from exact_ct.config import resolve_profile

    train = load_params(repo / "params.yaml").get("train") or {}
    profiles = train.get("profiles") or {}
    if not profiles:
        return None
    body = resolve_profile(profiles, str(train.get("profile", "cpu-demo")), "train.profiles")
    try:
        return TypeAdapter(PositiveInt).validate_python(body.get("epochs"))
    except ValidationError:
        return None
