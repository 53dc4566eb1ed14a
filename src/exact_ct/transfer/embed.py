"""Per-organ embedding vectors: multi-scale features of the pretrained network averaged inside each organ.

The vector of an organ concatenates, for every encoder level (full resolution first) and for the anomaly
decoder's full-resolution features, the mean feature inside that organ (the organ mask is average-pooled
onto each level's grid, so coarse levels use soft weights). Organs are those the model itself predicts
(argmax of the organ head), as at inference. Dimensions: ``sum(network.channels) + anomaly_channels[0]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from exact_ct.model.network import ExactNet
from exact_ct.model.package import ModelPackage
from exact_ct.schema import NUM_ORGAN_CLASSES, ORGANS


@dataclass
class OrganEmbeddings:
    """Embeddings of the organs present in one study (ids 1..9; 0, outside the body, is not an organ).

    Attributes:
        organ_ids: (n,) int organ ids in increasing order.
        vectors: (n, dim) float32.
        voxels: (n,) model-grid voxels of each organ.
        layers: names of the concatenated feature blocks with their widths, e.g. ``encoder0:8``.
        probs: (18,) the study-level probabilities of the same forward pass.
    """

    organ_ids: np.ndarray
    vectors: np.ndarray
    voxels: np.ndarray
    layers: list[str]
    probs: np.ndarray

    @property
    def organ_names(self) -> list[str]:
        return [ORGANS[int(i)] for i in self.organ_ids]


def embedding_layers(net: ExactNet) -> list[str]:
    enc = list(net.cfg.channels)
    ano = list(net.cfg.anomaly_channels or net.cfg.channels)
    return [f"encoder{i}:{c}" for i, c in enumerate(enc)] + [f"anomaly_decoder0:{ano[0]}"]


def embedding_dim(net: ExactNet) -> int:
    return sum(int(s.split(":")[1]) for s in embedding_layers(net))


@torch.no_grad()
def organ_embeddings(
    package: ModelPackage,
    image_norm: np.ndarray,
    device: str = "cpu",
    *,
    net: ExactNet | None = None,
    organ_probs: torch.Tensor | None = None,
) -> OrganEmbeddings:
    """Embeddings of one normalised image on the package's model grid, (C, x, y, z).

    Args:
        package: the pretrained package (its grid, pooling and, by default, its network).
        image_norm: (C, x, y, z) normalised image.
        device: torch device.
        net: the network whose features are pooled (default ``package.net``), e.g. the same architecture
            with fresh weights for a from-scratch baseline.
        organ_probs: (1, 10, x, y, z) organ probabilities to pool in (default: those ``net`` predicts);
            their argmax places the embeddings and they confine the 18 probabilities, so two networks
            given the same ``organ_probs`` differ only in their features.
    """
    from exact_ct.model.predict import predict

    net = (net if net is not None else package.net).to(device).eval()
    feats: list[torch.Tensor] = []
    hooks = [blk.register_forward_hook(lambda _m, _i, o: feats.append(o)) for blk in net.encoder]
    # The input of the 18-map head is the anomaly decoder's last feature map.
    hooks.append(net.anomaly_head_full.register_forward_pre_hook(lambda _m, i: feats.append(i[0])))
    try:
        x = torch.from_numpy(np.ascontiguousarray(image_norm, dtype=np.float32))[None].to(device)
        pool = package.pool().to(device)
        if organ_probs is None:
            pred = predict(net, pool, x, package.pooling.k_test)
            organ_p, study_probs = pred.organ_probs, pred.probs
        else:
            # The same pooling as predict(), inside the given organs instead of net's own.
            organ_p = organ_probs.to(device).float()
            logits = net(x).anomaly_logits_full
            study_probs = pool(pool.pool_input(logits), organ_p, package.pooling.k_test)
    finally:
        for h in hooks:
            h.remove()
    organs = organ_p.argmax(1)  # (1, X, Y, Z)
    onehot = F.one_hot(organs, NUM_ORGAN_CLASSES).permute(0, 4, 1, 2, 3).float()
    blocks = []
    for f in feats:
        size = tuple(int(s) for s in f.shape[2:])
        w = F.adaptive_avg_pool3d(onehot, size) if f.shape[2:] != onehot.shape[2:] else onehot  # type: ignore[arg-type]
        mass = w.flatten(2).sum(-1).clamp_min(1e-6)  # (1, 10)
        blocks.append(torch.einsum("boxyz,bcxyz->boc", w, f) / mass[..., None])
    vec = torch.cat(blocks, dim=-1)[0].cpu().numpy().astype(np.float32)  # (10, dim)
    voxels = onehot.flatten(2).sum(-1)[0].cpu().numpy().astype(np.int64)
    ids = np.array([o for o in range(1, NUM_ORGAN_CLASSES) if voxels[o] > 0], dtype=np.int64)
    return OrganEmbeddings(ids, vec[ids], voxels[ids], embedding_layers(net), study_probs[0].cpu().numpy())


def study_vector(emb: OrganEmbeddings, dim: int) -> np.ndarray:
    """Fixed-length study vector for a linear probe: organs 1..9 in order (zeros when absent) + 18 probs."""
    out = np.zeros((NUM_ORGAN_CLASSES - 1, dim), np.float32)
    for oid, v in zip(emb.organ_ids, emb.vectors, strict=True):
        out[int(oid) - 1] = v
    return np.concatenate([out.ravel(), emb.probs.astype(np.float32)])


def write_embeddings(emb: OrganEmbeddings, path: str, *, model_version: str = "") -> None:
    """Write as ``.npz`` (arrays: organ_ids, organ_names, embeddings, voxels, layers), ``.parquet`` or
    ``.csv`` (one row per organ: organ_id, organ_name, voxels, e0..e{dim-1}); atomically."""
    import pandas as pd

    from exact_ct.dataset.cache import save_npz
    from exact_ct.io import atomic_path, write_csv_atomic

    if path.endswith(".npz"):
        save_npz(
            path,
            {
                "organ_ids": emb.organ_ids,
                "organ_names": np.array(emb.organ_names),
                "embeddings": emb.vectors,
                "voxels": emb.voxels,
                "layers": np.array(emb.layers),
                "model_version": np.array(model_version),
            },
        )
        return
    frame = pd.DataFrame(emb.vectors, columns=[f"e{i}" for i in range(emb.vectors.shape[1])])
    frame.insert(0, "voxels", emb.voxels)
    frame.insert(0, "organ_name", emb.organ_names)
    frame.insert(0, "organ_id", emb.organ_ids)
    if path.endswith(".csv"):
        write_csv_atomic(path, frame)
    elif path.endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"{path}: Parquet needs a working pyarrow ({e}); write .npz or .csv") from None
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
    else:
        raise ValueError(f"{path}: unsupported embedding file type; use .npz, .parquet or .csv")
