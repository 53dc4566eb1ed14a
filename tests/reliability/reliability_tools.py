"""Helpers of the reliability suite: tiny workspaces, file trees, identifier search, process killing."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
BIN = Path(sys.executable).parent


def is_atomic_temp(path: Path) -> bool:
    """Hidden temporary files of exact_ct.io.atomic_path (``.name.XXXX.tmp...``) and the masks QC temp."""
    name = path.name
    return name.startswith(".") and (".tmp" in name or name.endswith(".qc.nii.gz"))


def tree(root: Path, *, hidden: bool = False) -> dict[str, bytes]:
    """Relative path -> bytes of every file below ``root`` (hidden files only when asked)."""
    out: dict[str, bytes] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        if p.is_file() and (hidden or not any(part.startswith(".") for part in p.relative_to(root).parts)):
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def hidden_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def tiny_workspace(tmp_path: Path, batches: dict[str, int] | None = None, *, epochs: int = 1) -> Path:
    """A clone-like workspace (the lead's e2e pattern): the repo's git-tracked and not-ignored files,
    its own git, DVC and remote, and params shrunk to CI size.

    Untracked, not-ignored files are included too, so the workspace is what ``git add -A`` would commit.
    """
    ws = tmp_path / "ws"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in listed:
        if not rel or rel.startswith("tests/"):
            continue
        src = REPO / rel
        if src.is_file():
            dst = ws / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    yaml = YAML()
    params_path = ws / "params.yaml"
    params = yaml.load(params_path.read_text())
    params["batches"] = []
    params["demo"]["batches"] = batches or {"rel-b1": 4}
    grid = params["build_dataset"]["profiles"]["cpu-demo"]
    grid["spacing_xyz_mm"], grid["size_xyz"] = [12.0, 12.0, 12.0], [32, 24, 24]
    params["build_dataset"]["fingerprint_samples"] = 2000
    train = params["train"]["profiles"]["cpu-demo"]
    train["epochs"], train["pseudo_mask_epochs"] = epochs, epochs
    train["network"]["channels"] = [4, 8, 16]
    train["network"]["organ_deep_supervision"] = 1
    train["checkpoint_every_steps"] = 1
    params["evaluate"]["bootstrap"] = 20
    # a few-study CI model is far below the quality floor; switch it off so the story (publish) runs
    params["publish"]["min_macro_auroc"], params["publish"]["min_test_studies"] = 0.0, 0
    with open(params_path, "w") as f:
        yaml.dump(params, f)
    if not (ws / ".dvc").is_dir():
        subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=ws, check=True)
    subprocess.run(["git", "add", "-A"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=ws, check=True)
    return ws


def env(**extra: str) -> dict[str, str]:
    """The environment of child processes: test mode, no analytics, the venv's bin first on PATH."""
    e = dict(os.environ)
    e.update(
        EXACT_MODE=e.get("EXACT_MODE", "test"),
        DVC_NO_ANALYTICS="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        OMP_WAIT_POLICY="PASSIVE",
        PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}",
    )
    e.update(extra)
    return e


def run(cmd: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, cwd=cwd, env=env(**extra_env), capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def run_and_kill(cmd: list[str], cwd: Path, after_s: float, **extra_env: str) -> tuple[bool, str]:
    """Start ``cmd`` in its own process group and SIGKILL the whole group after ``after_s`` seconds.

    The group is killed (as a crash or an OOM-killed job would lose every process), so worker processes
    of a pool cannot go on writing after the check. Returns (was it killed before it finished, stderr).
    """
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env(**extra_env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + after_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    # Orphaned grandchildren would share the group; wait until none is left.
    for _ in range(100):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return killed, err


def texts_of(path: Path) -> Iterator[tuple[str, bytes]]:
    """The searchable contents of a file: itself, plus decompressed .gz and the members of .npz/.zip."""
    data = path.read_bytes()
    yield str(path), data
    if data[:2] == b"\x1f\x8b":
        try:
            yield f"{path}!gunzip", gzip.decompress(data)
        except (OSError, EOFError):
            pass
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for name in z.namelist():
                    yield f"{path}!{name}", z.read(name)
        except zipfile.BadZipFile:
            pass


def search(roots: Iterable[Path], needles: Iterable[str]) -> list[tuple[str, str]]:
    """(where, needle) for every needle found (case-insensitive, also as UTF-16) below ``roots``."""
    forms = {}
    for n in needles:
        forms[n] = [n.lower().encode(), n.lower().encode("utf-16-le")]
    hits: list[tuple[str, str]] = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            for where, blob in texts_of(f):
                low = blob.lower()
                for needle, variants in forms.items():
                    if any(v in low for v in variants):
                        hits.append((where, needle))
    return hits


def dump_yaml(path: Path, obj: Any) -> None:
    yaml = YAML()
    with open(path, "w") as f:
        yaml.dump(obj, f)


def planted(tag: str) -> dict[str, str]:
    """Unique identifier strings for one batch (``tag``), one per kind of DICOM field."""
    return {
        "patient_name": f"ZQX{tag}PATNAME^QZVXAVIER",
        "other_name": f"ZQX{tag}ALIASNAME",
        "birth_date": "19230817",
        "study_date": "19990313",
        "institution": f"ZQX{tag}HOSPITAL",
        "address": f"ZQX{tag}STREET 12",
        "referring": f"ZQX{tag}REFDOC^ANNA",
        "performing": f"ZQX{tag}PERFDOC^OTTO",
        "operator": f"ZQX{tag}OPERATOR",
        "nested_physician": f"ZQX{tag}NESTDOC^PAUL",
        "nested_id": f"ZQX{tag}NESTID",
        "private": f"ZQX{tag}PRIVATEVALUE",
    }


def plant_identifiers(drop: Path, tag: str) -> list[str]:
    """Write the planted identifiers into every DICOM header of ``drop`` (top level, a nested sequence,
    a private block) and into every report; returns all identifier strings to search for afterwards,
    the drop's own accession numbers and patient ids included."""
    import pandas as pd
    import pydicom
    from pydicom.dataset import Dataset

    p = planted(tag)
    for f in sorted(q for q in (drop / "dicom").rglob("*") if q.is_file()):
        ds = pydicom.dcmread(f)
        ds.PatientName = p["patient_name"]
        ds.OtherPatientNames = p["other_name"]
        ds.PatientBirthDate = p["birth_date"]
        for kw in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
            setattr(ds, kw, p["study_date"])
        ds.InstitutionName = p["institution"]
        ds.InstitutionAddress = p["address"]
        ds.ReferringPhysicianName = p["referring"]
        ds.PerformingPhysicianName = p["performing"]
        item = Dataset()
        item.RequestingPhysician = p["nested_physician"]
        item.RequestedProcedureID = p["nested_id"]
        op = Dataset()
        op.OperatorsName = p["operator"]
        item.ReferencedStudySequence = [op]  # two levels deep
        ds.RequestAttributesSequence = [item]
        block = ds.private_block(0x0011, "ZQX RELIABILITY", create=True)
        block.add_new(0x01, "LO", p["private"])
        ds.save_as(f, enforce_file_format=True)
    reports = pd.read_csv(drop / "reports.csv", dtype=str, keep_default_na=False)
    needles = [v for k, v in p.items() if k != "address"] + [p["address"].split()[0]]
    needles += ["17.08.1923", "1923-08-17", "QZVXAVIER"]
    for i, r in reports.iterrows():
        # Report text names what the headers hold (the scrubber's dictionary), in report spelling.
        reports.loc[i, "findings"] = (
            f"Patient {p['patient_name'].replace('^', ' ')} ({p['other_name']}), MRN {r['patient_id']}, "
            f"accession {r['accession_number']}, born 17.08.1923 (1923-08-17), seen at {p['institution']}, "
            f"referred by Dr {p['referring'].replace('^', ' ')}, requested by {p['nested_physician'].split('^')[0]}.\n"
            + r["findings"]
        )
        needles += [r["accession_number"], r["patient_id"]]
    reports.to_csv(drop / "reports.csv", index=False, lineterminator="\n")
    return sorted(set(needles))


DEMO_BATCHES = {"e2e-b1": 8, "e2e-b2": 6}  # every split non-empty
DEMO_KEY = "rel-audit-key-5c1f0e9a7b3d"  # a unique pseudonymisation key: it must never be written anywhere
_DEMO_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
import flows.demo as demo
from flows.retrain import retrain
from reliability_tools import plant_identifiers
ws, needles, drops = Path(sys.argv[1]), [], []
synthesise = demo.synthesise
def synthesise_and_plant(repo, batch, studies, seed):
    inbox = synthesise(repo, batch, studies, seed)
    drops.append(batch)
    needles.extend(plant_identifiers(inbox, f"B{len(drops)}"))
    return inbox
demo.synthesise = synthesise_and_plant  # what `make demo` runs, with identifiers planted in each drop
results = demo.run_demo(ws, push=True)
again = retrain(repo=str(ws), push=False)  # nothing new arrived: the flow must say so and run nothing
(ws.parent / "driver.json").write_text(json.dumps({"needles": needles, "results": results, "again": again}))
"""


def run_two_batch_demo(tmp: Path) -> dict[str, Any]:
    """``flows.demo.run_demo`` on a tiny workspace with the batches ``DEMO_BATCHES``: each batch synthesised
    (identifiers planted in every DICOM header and report), then retrained through the Prefect flow and
    pushed to the workspace's DVC remote, with its own temporary Prefect server and database under ``tmp``;
    then a third retrain with nothing new.

    Returns the workspace ``ws``, ``prefect_home``, the captured ``logs`` (stdout and stderr, DEBUG level),
    the planted ``needles``, the two retrain ``results`` and the third run's result ``again``.
    """
    ws = tiny_workspace(tmp, DEMO_BATCHES, epochs=2)
    prefect_home = tmp / "prefect-home"
    child_env = env(
        EXACT_PSEUDONYM_KEY=DEMO_KEY,
        PREFECT_HOME=str(prefect_home),
        PREFECT_LOGGING_LEVEL="DEBUG",
        # the temporary server needed > 90 s to come up on the loaded 2-core CI machine
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
    )
    child_env.pop("PREFECT_API_URL", None)  # its own temporary server, database under PREFECT_HOME
    tools = Path(__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-c", _DEMO_DRIVER, str(ws), str(tools), json.dumps(DEMO_BATCHES)],
        cwd=ws,
        env=child_env,
        capture_output=True,
        text=True,
    )
    logs = tmp / "captured.log"
    logs.write_text(proc.stdout + "\n" + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = json.loads((tmp / "driver.json").read_text())
    return {"ws": ws, "prefect_home": prefect_home, "logs": logs, **out}
