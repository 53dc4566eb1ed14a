"""Linear probe: logistic regression on frozen per-organ embeddings of a pretrained (or freshly
initialised) network, stored as plain numbers (no pickles in the package)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage
from exact_ct.transfer.config import FinetuneConfig


def probe_features(samples_images: torch.Tensor, base: ModelPackage) -> np.ndarray:
    """(N, 9 * dim + 18) study vectors of frozen per-organ embeddings (see exact_ct.transfer.embed)."""
    from exact_ct.transfer.embed import embedding_dim, organ_embeddings, study_vector

    dim = embedding_dim(base.net)
    return np.stack([study_vector(organ_embeddings(base, img.numpy()), dim) for img in samples_images])


def scratch_exact_net(base: ModelPackage, seed: int) -> ExactNet:
    """The package's network architecture with fresh weights seeded by ``seed`` (eval mode).

    The same weights as the trunk of ``build_net(..., pretrained=False, seed=seed)`` (the fine-tune scratch
    arm), but with its 18-map head kept; the global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ExactNet(base.network, base.plan.in_channels)
    return net.eval()


@torch.no_grad()
def probe_features_in_base_organs(
    samples_images: torch.Tensor, base: ModelPackage, net: ExactNet | None = None
) -> np.ndarray:
    """:func:`probe_features` of ``net`` (default ``base.net``) pooled inside the organs ``base`` predicts.

    With ``net=None`` this equals ``probe_features(samples_images, base)``; with another network of the
    same architecture (e.g. :func:`scratch_exact_net`) only the features differ, not where they are pooled.
    """
    from exact_ct.transfer.embed import embedding_dim, organ_embeddings, study_vector

    dim = embedding_dim(base.net)
    base_net = base.net.eval()
    out = []
    for img in samples_images:
        x = img[None].float()
        organ_probs = base_net(x).organ_logits.float().softmax(1)  # as exact_ct.model.predict.predict
        emb = organ_embeddings(base, img.numpy(), net=net, organ_probs=organ_probs)
        out.append(study_vector(emb, dim))
    return np.stack(out)


def fit_probe(x: np.ndarray, y: np.ndarray, cfg: FinetuneConfig) -> dict[str, Any]:
    """Standardise + L2 logistic regression; returned as plain numbers (no pickles in the package)."""
    from sklearn.linear_model import LogisticRegression

    if len(set(np.asarray(y).tolist())) < 2:
        raise ValueError("the linear probe needs both classes among the training studies")
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-8] = 1.0
    clf = LogisticRegression(C=cfg.probe_c, max_iter=2000, class_weight="balanced")
    clf.fit((x - mean) / scale, y)
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": clf.coef_[0].tolist(),
        "intercept": float(clf.intercept_[0]),
    }


def apply_probe(probe: dict[str, Any], x: np.ndarray) -> np.ndarray:
    z = (x - np.asarray(probe["mean"])) / np.asarray(probe["scale"])
    logit = z @ np.asarray(probe["coef"]) + float(probe["intercept"])
    return 1.0 / (1.0 + np.exp(-logit))
