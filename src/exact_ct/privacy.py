"""Pseudonymisation of identifiers with a keyed hash (HMAC-SHA256); the key comes from the environment."""

from __future__ import annotations

import hashlib
import hmac
import os

KEY_ENV = "EXACT_PSEUDONYM_KEY"
MODE_ENV = "EXACT_MODE"
#: Used only when EXACT_MODE is "demo" or "test". It is public, hence INSECURE: never use it on real data.
INSECURE_DEMO_KEY = "exact-ct-insecure-demo-key"


class MissingKeyError(RuntimeError):
    pass


def pseudonym_key() -> bytes:
    """The pseudonymisation key from ``EXACT_PSEUDONYM_KEY``.

    Outside demo/test mode (``EXACT_MODE=demo`` or ``test``) a missing key is an error, so real
    data is never hashed with a key that anyone could read from the repository.
    """
    key = os.environ.get(KEY_ENV)
    if key:
        return key.encode("utf-8")
    if os.environ.get(MODE_ENV, "").lower() in {"demo", "test"}:
        return INSECURE_DEMO_KEY.encode("utf-8")
    raise MissingKeyError(
        f"{KEY_ENV} is not set. Set it to a long random secret kept outside the repository "
        f"(e.g. `export {KEY_ENV}=$(openssl rand -hex 32)`), or set {MODE_ENV}=demo for synthetic data only."
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
