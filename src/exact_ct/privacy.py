"""Pseudonymisation of identifiers with a keyed hash (HMAC-SHA256); the key comes from the environment."""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections import Counter
from pathlib import Path

KEY_ENV = "EXACT_PSEUDONYM_KEY"
MODE_ENV = "EXACT_MODE"
#: Used only when EXACT_MODE is "demo" or "test". It is public, hence INSECURE: never use it on real data.
INSECURE_DEMO_KEY = "exact-ct-insecure-demo-key"


#: A key needs at least this many characters and this many bits by a per-character (Shannon)
#: estimate: `openssl rand -hex 32` gives 64 characters and ~250 bits; "a", " " or "aaaa..." fail.
MIN_KEY_CHARS = 16
MIN_KEY_BITS = 64.0
#: The name of the file holding the key fingerprint in each ingested batch's output folder.
FINGERPRINT_FILE = "key_fingerprint.txt"
_HOW = f"e.g. `export {KEY_ENV}=$(openssl rand -hex 32)`, kept outside the repository"


class MissingKeyError(RuntimeError):
    pass


class WeakKeyError(MissingKeyError):
    """The key is set but too short, too repetitive, padded with spaces, or the public demo key."""


class KeyChangedError(RuntimeError):
    """The key differs from the one earlier batches were ingested with (docs/ingest.md: rotation)."""


def _demo_mode() -> bool:
    return os.environ.get(MODE_ENV, "").lower() in {"demo", "test"}


def key_bits(key: str) -> float:
    """A crude strength estimate: length x Shannon entropy of the key's own character frequencies."""
    counts = Counter(key)
    return -sum(c * math.log2(c / len(key)) for c in counts.values()) if key else 0.0


def check_key(key: str) -> None:
    """Raise WeakKeyError naming what is wrong with ``key`` (never echoing it)."""
    problem = ""
    if not key.strip():
        problem = "is empty or only whitespace"
    elif key != key.strip():
        problem = "starts or ends with whitespace (a copy-paste slip would change every pseudonym)"
    elif len(key) < MIN_KEY_CHARS:
        problem = f"has {len(key)} characters; at least {MIN_KEY_CHARS} are required"
    elif key_bits(key) < MIN_KEY_BITS:
        problem = (
            f"is too repetitive (~{key_bits(key):.0f} bits by character entropy; at least {MIN_KEY_BITS:.0f})"
        )
    elif key == INSECURE_DEMO_KEY and not _demo_mode():
        problem = f"is the public demo key, allowed only with {MODE_ENV}=demo or test"
    if problem:
        raise WeakKeyError(f"{KEY_ENV} {problem}. Use a long random secret ({_HOW}).")


def pseudonym_key() -> bytes:
    """The pseudonymisation key from ``EXACT_PSEUDONYM_KEY``, checked by :func:`check_key`.

    Only when the variable is unset and ``EXACT_MODE`` is ``demo`` or ``test`` is the public demo
    key used; outside those modes a missing key is an error, so real data is never hashed with a key
    that anyone could read from the repository. A set but empty key is an error in every mode.
    """
    key = os.environ.get(KEY_ENV)
    if key is not None:
        check_key(key)
        return key.encode("utf-8")
    if _demo_mode():
        return INSECURE_DEMO_KEY.encode("utf-8")
    raise MissingKeyError(
        f"{KEY_ENV} is not set. Set it to a long random secret ({_HOW}), "
        f"or set {MODE_ENV}=demo for synthetic data only."
    )


def key_fingerprint(key: bytes) -> str:
    """A keyed hash of a constant: equal for equal keys, says nothing about the key itself."""
    return "kf-" + hmac.new(key, b"exact-ct pseudonym key fingerprint v1", hashlib.sha256).hexdigest()[:16]


def check_key_unchanged(fingerprint: str, peers: Path, own: Path | None = None) -> None:
    """Raise KeyChangedError when a batch folder under ``peers`` (other than ``own``) holds another
    key's fingerprint: a new key would give the same patient a second pseudonym and move patients
    across the train/test split."""
    if not peers.is_dir():
        return
    others = {}
    for f in sorted(peers.glob(f"*/{FINGERPRINT_FILE}")):
        if own is not None and f.parent.resolve() == own.resolve():
            continue
        value = f.read_text(encoding="utf-8").strip()
        if value != fingerprint:
            others[f.parent.name] = value
    if others:
        demo = key_fingerprint(INSECURE_DEMO_KEY.encode("utf-8"))
        note = (
            " (they were ingested with the public demo key)"
            if demo in others.values()
            else " (this run uses the public demo key)"
            if fingerprint == demo
            else ""
        )
        raise KeyChangedError(
            f"{KEY_ENV} differs from the key batch(es) {sorted(others)} in {peers} were ingested with{note}: "
            "the same patient would get a second pseudonym and patients would move across the "
            "train/test split. Use the original key, or rotate the key for every batch "
            "(docs/ingest.md, 'Key rotation')."
        )


def pseudonymise(value: str, key: bytes | None = None, prefix: str = "", length: int = 16) -> str:
    """Keyed hash of an identifier: stable for one key, irreversible without it."""
    k = pseudonym_key() if key is None else key
    digest = hmac.new(k, value.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:length]}"


def study_pseudonym(accession_number: str, key: bytes | None = None) -> str:
    """The study id used everywhere after ingest (file names, manifests, truth joins): ``s-<hash>``."""
    return pseudonymise(accession_number, key, prefix="s-")


def patient_pseudonym(patient_id: str, key: bytes | None = None) -> str:
    """The patient id used after ingest (and for the patient-level split): ``p-<hash>``."""
    return pseudonymise(patient_id, key, prefix="p-")
