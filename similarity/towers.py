"""A content tower: stored content embeddings -> a space where co-engaged items are close.

The tower (Instacart's ITEMS model is the pattern) maps an item's normalised
per-modality embeddings (``index/catalog.h5``) to one L2-normalised vector:

1. each modality is (optionally) reduced by a fixed PCA learned on the
   catalog (``tower_input_dim``; speed only), then projected by its own
   linear layer to ``tower_hidden`` dimensions;
2. the projections of the modalities the item *has* are averaged (a modality
   it lacks adds nothing and does not count, the missing-modality rule of
   fusion, docs/similarity.md);
3. a small MLP (LayerNorm, GELU, Linear, GELU, Linear) maps that to
   ``tower_dim`` dimensions, and the output is L2-normalised.

It is trained on co-engagement pairs ``(a, b)`` (two items one user engaged
with close together in time) with in-batch negatives: for anchor ``a_i`` the
positive is ``b_i`` and every other ``b_j`` in the batch is a negative. The
losses are a registry (:data:`LOSSES`); ``s`` is a cosine divided by
``temperature``:

- ``in-batch``: ``-log σ(s⁺) - Σ_j w_j log σ(-s_j)`` with equal weights ``w_j``;
- ``self-adversarial``: the same, with ``w_j = softmax_j(cos_j / adversarial_temperature)``
  (not back-propagated), so negatives the model already scores high, the hard
  ones, weigh more than easy ones (Sun et al. 2019; ITEMS);
- ``softmax``: in-batch sampled softmax (InfoNCE), ``-log softmax(s)[positive]``.

Optional hard negatives (``hard_negatives``) are mined once from each anchor's
raw content neighbours that no user engaged with together with it, and join
the batch's negatives. Training is a cascade: step 1 on all co-engagement,
step 2 (``finetune_epochs``) on pairs of high-quality engagements only (e.g.
two purchases), at a lower learning rate.

On CPU, two runs with the same seed and thread count give the same weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from reelsim.config import MODALITIES, LearnConfig
from reelsim.errors import TrainingError, UsageError
from reelsim.extractors.device import resolve_device
from reelsim.reporting import Progress, report
from reelsim.similarity.fusion import learn_projection

#: rows (a seeded sample) that the fixed input PCA is learned on
PCA_ROWS = 20_000
#: embedding forward passes are done in blocks of this many items (the last one padded to it)
EMBED_BLOCK = 2048


@dataclass
class TowerModel:
    """A trained content tower: its architecture, weights and fixed input projections.

    in_dims : modality -> input size of its projection layer (after ``projections``).
    projections : modality -> float32 (d_m, r_m), the fixed input PCA (absent: none).
    state : parameter name -> float32 array (``torch`` state dict as numpy).
    hidden, out_dim : layer sizes.
    history : training metrics (per-epoch mean loss of each step of the cascade, pairs used).
    """

    in_dims: dict[str, int]
    projections: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    hidden: int
    out_dim: int
    history: dict = field(default_factory=dict)

    def module(self, device="cpu"):
        """The torch module with these weights, in eval mode."""
        import torch

        net = build_module(self.in_dims, self.hidden, self.out_dim)
        net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.state.items()})
        return net.to(device).eval()

    def embed(self, vectors: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], *,
              device: str = "cpu") -> np.ndarray:
        """Learned-space vectors of items given by normalised per-modality embeddings.

        Parameters
        ----------
        vectors : dict of str to float32 (n, d_m)
            As in ``index/catalog.h5`` (centred, L2-normalised; zero rows where missing).
        masks : dict of str to bool (n,)

        Returns
        -------
        float32 (n, out_dim)
            Unit rows; zero rows for items that have none of the tower's modalities.
        """
        import torch

        x, mask = tower_inputs(vectors, masks, self)
        n = next(iter(mask.values())).shape[0] if mask else 0
        net = self.module(resolve_device(device))
        dev = next(net.parameters()).device
        out = np.zeros((n, self.out_dim), np.float32)
        with torch.no_grad():  # blocks of one shape (the last one padded): an item's vector is the same bits
            for i0 in range(0, n, EMBED_BLOCK):  # whatever the catalog's size (added items change no old vector)
                r = slice(i0, i0 + EMBED_BLOCK)
                b = min(n, i0 + EMBED_BLOCK) - i0
                xb = {m: _pad_rows(x[m][r], EMBED_BLOCK) for m in x}
                mb = {m: _pad_rows(mask[m][r], EMBED_BLOCK) for m in mask}
                out[r] = net({m: torch.from_numpy(v).to(dev) for m, v in xb.items()},
                             {m: torch.from_numpy(v).to(dev) for m, v in mb.items()}).cpu().numpy()[:b]
        none = ~np.any(np.stack([mask[m] for m in mask]), axis=0) if mask else np.ones(n, bool)
        out[none] = 0
        return out


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` with zero rows appended up to ``rows`` rows."""
    return np.concatenate([a, np.zeros((rows - a.shape[0],) + a.shape[1:], a.dtype)]) if a.shape[0] < rows else a


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads and ``n`` BLAS threads (numpy, scipy) (0: leave both
    as they are), then restore them.

    On a shared 2-core machine two BLAS threads made one eigendecomposition of
    EASE's Gram matrix 9x slower than one (44.7 s vs 5.1 s at 1 312 items).
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n or None, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def tower_inputs(vectors: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                 model: TowerModel) -> tuple[dict, dict]:
    """The tower's inputs: each of its modalities reduced by its fixed projection (zeros where absent)."""
    n = next(iter(masks.values())).shape[0] if masks else 0
    x, mask = {}, {}
    for m, d in model.in_dims.items():
        if m in vectors:
            v = vectors[m]
            x[m] = np.ascontiguousarray(v @ model.projections[m] if m in model.projections else v, dtype=np.float32)
            mask[m] = np.asarray(masks[m], bool)
            if x[m].shape[1] != d:
                raise UsageError(f"the tower expects {m} vectors of size {d} (after its projection), "
                                 f"got {x[m].shape[1]}: the catalog changed since training; run `reelsim train` again")
        else:
            x[m], mask[m] = np.zeros((n, d), np.float32), np.zeros(n, bool)
    return x, mask


def content_vectors(vectors: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], model: TowerModel,
                    weights: Mapping[str, float]) -> np.ndarray:
    """The items' own content as the tower sees it, for the tower's skip connection.

    Each of the tower's modalities, reduced by its fixed projection and
    L2-normalised, times ``sqrt(w_m)``, concatenated, and the row L2-normalised:
    the inner product of two rows is the cosine of their fused content.

    Returns
    -------
    float32 (n, sum of the tower's input sizes)
        Zero rows for items with none of the modalities (or only weight-0 ones).
    """
    x, mask = tower_inputs(vectors, masks, model)
    parts = []
    for m in x:
        w = float(weights.get(m, 0.0))
        if w <= 0:
            continue
        v = x[m] * mask[m][:, None]
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        parts.append(v * np.float32(np.sqrt(w)))
    n = next(iter(mask.values())).shape[0] if mask else 0
    out = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0), np.float32)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32, copy=False)


def build_module(in_dims: Mapping[str, int], hidden: int, out_dim: int):
    """The tower as a ``torch.nn.Module``: ``forward(x: {m: (B, d_m)}, mask: {m: (B,)}) -> (B, out_dim)``."""
    import torch

    class ContentTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.modalities = [m for m in MODALITIES if m in in_dims]
            self.proj = torch.nn.ModuleDict({m: torch.nn.Linear(in_dims[m], hidden) for m in self.modalities})
            self.mlp = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
                                           torch.nn.GELU(), torch.nn.Linear(hidden, out_dim))

        def forward(self, x, mask):
            total, count = 0.0, 0.0
            for m in self.modalities:
                w = mask[m].to(x[m].dtype)[:, None]
                total = total + w * self.proj[m](x[m])
                count = count + w
            return torch.nn.functional.normalize(self.mlp(total / torch.clamp(count, min=1.0)), dim=-1)

    return ContentTower()


# ---------------------------------------------------------------------------- losses


def _loss_in_batch(S, valid, cfg: LearnConfig, adversarial: bool):
    import torch
    import torch.nn.functional as F

    pos = S.diagonal()
    if adversarial:
        w = torch.softmax(torch.where(valid, S.detach() / cfg.adversarial_temperature, -torch.inf), dim=1)
    else:
        w = valid.float() / valid.sum(dim=1, keepdim=True).clamp(min=1)
    neg = -(w * F.logsigmoid(-S / cfg.temperature)).nan_to_num(0.0).sum(dim=1)
    return (-F.logsigmoid(pos / cfg.temperature) + neg).mean()


def _loss_softmax(S, valid, cfg: LearnConfig):
    import torch

    logits = torch.where(valid, S / cfg.temperature, -torch.inf)
    logits = logits.clone()
    idx = torch.arange(S.shape[0], device=S.device)
    logits[idx, idx] = S.diagonal() / cfg.temperature
    return torch.nn.functional.cross_entropy(logits, idx)


#: loss name -> fn(S (B, C) cosines with positives on the diagonal, valid (B, C) negatives mask, cfg) -> scalar
LOSSES: dict[str, Callable] = {
    "self-adversarial": lambda S, valid, cfg: _loss_in_batch(S, valid, cfg, True),
    "in-batch": lambda S, valid, cfg: _loss_in_batch(S, valid, cfg, False),
    "softmax": _loss_softmax,
}


# ---------------------------------------------------------------------------- pairs


def co_engagement_pairs(user: np.ndarray, item: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of different items one user engaged with at most ``window`` rows apart.

    Parameters
    ----------
    user, item : int (R,)
        Rows already ordered by user, then time.
    window : int

    Returns
    -------
    a, b : int64 (P,)
        Both directions of each pair are included.

    Examples
    --------
    >>> a, b = co_engagement_pairs(np.array([0, 0, 0, 1]), np.array([5, 6, 5, 7]), 1)
    >>> sorted(zip(a.tolist(), b.tolist()))
    [(5, 6), (5, 6), (6, 5), (6, 5)]
    """
    user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
    a, b = [], []
    for k in range(1, window + 1):
        ok = (user[k:] == user[:-k]) & (item[k:] != item[:-k])
        a.append(item[:-k][ok])
        b.append(item[k:][ok])
    a, b = np.concatenate(a) if a else np.zeros(0, np.int64), np.concatenate(b) if b else np.zeros(0, np.int64)
    return np.concatenate([a, b]), np.concatenate([b, a])


def mine_hard_negatives(x_fused: np.ndarray, anchors: np.ndarray, pair_keys: np.ndarray, n_items: int, *,
                        pool: int, per_anchor: int, seed: int) -> dict[int, np.ndarray]:
    """Raw content neighbours of ``anchors`` that are never co-engaged with them.

    Parameters
    ----------
    x_fused : float32 (N, D)
        Fused normalised content of every item (inner product = content score numerator).
    anchors : int (A,)
        Items to mine for.
    pair_keys : int64 (P,)
        Sorted ``a * n_items + b`` of all co-engaged pairs.
    pool, per_anchor : int
        Content neighbours searched; hard negatives kept per anchor (a seeded choice among them).

    Returns
    -------
    dict of int to int64 (<= per_anchor,)
    """
    import faiss

    rng = np.random.default_rng(seed)
    out = {}
    for i0 in range(0, anchors.size, 4096):
        q = anchors[i0:i0 + 4096]
        _, I = faiss.knn(np.ascontiguousarray(x_fused[q]), x_fused, pool + 1, metric=faiss.METRIC_INNER_PRODUCT)
        for a, row in zip(q.tolist(), I):
            row = row[(row >= 0) & (row != a)]
            keys = a * n_items + row
            pos = np.searchsorted(pair_keys, keys)
            co = (pos < pair_keys.size) & (pair_keys[np.minimum(pos, pair_keys.size - 1)] == keys)
            row = row[~co]
            if row.size:
                out[a] = rng.choice(row, size=min(per_anchor, row.size), replace=False)
    return out


# ---------------------------------------------------------------------------- training


@dataclass
class TrainingPairs:
    """Co-engagement pairs for the two steps of the cascade: int64 (P,) each."""

    a: np.ndarray
    b: np.ndarray
    quality_a: np.ndarray
    quality_b: np.ndarray


def train_tower(vectors: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], pairs: TrainingPairs,
                cfg: LearnConfig, *, hard: dict[int, np.ndarray] | None = None,
                progress: Progress | None = None,
                validate: Callable[[TowerModel], float] | None = None, patience: int = 1) -> TowerModel:
    """Train the content tower on co-engagement pairs (module docstring).

    Parameters
    ----------
    vectors, masks : dict of str to (N, d_m) float32 / (N,) bool
        The catalog's normalised embeddings.
    pairs : TrainingPairs
        Catalog rows; step 2 is skipped when there are no quality pairs or ``finetune_epochs`` is 0.
    cfg : LearnConfig
    hard : dict of int to int64 array, optional
        Hard negatives per anchor row (:func:`mine_hard_negatives`).
    validate : callable, optional
        ``validate(model) -> float`` (higher is better), called after each epoch: early stopping.
        The epochs are then maxima: a step stops after ``patience`` epochs without a better score,
        the next step starts from the best weights so far, and the best weights are kept
        (``history["kept"]`` says which step and epoch).

    Returns
    -------
    TowerModel

    Raises
    ------
    TrainingError
        An epoch trained no batch, or its loss is not finite.
    """
    import torch

    if pairs.a.size == 0:
        raise UsageError("no co-engagement pairs to train the tower on: every user engaged with one item only")
    active = [m for m in MODALITIES if m in vectors and np.any(masks[m])]
    if not active:
        raise UsageError("the catalog has no content embeddings to train the tower on")
    projections = {}
    for m in active:
        if cfg.tower_input_dim is not None and vectors[m].shape[1] > cfg.tower_input_dim:
            rows = np.flatnonzero(masks[m])
            if rows.size > PCA_ROWS:  # a seeded sample, taken before copying rows (memory)
                rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, PCA_ROWS, replace=False))
            projections[m] = learn_projection(vectors[m][rows], cfg.tower_input_dim, False)
    model = TowerModel({m: (projections[m].shape[1] if m in projections else vectors[m].shape[1]) for m in active},
                       projections, {}, cfg.tower_hidden, cfg.tower_dim)
    x, mask = tower_inputs({m: vectors[m] for m in active}, {m: masks[m] for m in active}, model)
    dev = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = build_module(model.in_dims, cfg.tower_hidden, cfg.tower_dim).to(dev)
    X = {m: torch.from_numpy(x[m]).to(dev) for m in active}
    M = {m: torch.from_numpy(mask[m]).to(dev) for m in active}
    rng = np.random.default_rng(cfg.seed)
    history = {"pairs": int(pairs.a.size), "quality_pairs": int(pairs.quality_a.size), "loss": cfg.loss,
               "step1_loss": [], "step2_loss": [], "step1_valid": [], "step2_valid": []}
    steps = [("step1", pairs.a, pairs.b, cfg.tower_epochs, cfg.tower_lr)]
    if cfg.finetune_epochs and pairs.quality_a.size >= 2:
        steps.append(("step2", pairs.quality_a, pairs.quality_b, cfg.finetune_epochs, cfg.finetune_lr))
    n_items = next(iter(masks.values())).shape[0]
    known = np.unique(pairs.a * n_items + pairs.b) if cfg.mask_false_negatives else None
    snapshot = lambda: {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    best = (-np.inf, snapshot(), None)
    for name, a, b, epochs, lr in steps:
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        worse = 0
        for epoch in range(epochs):
            loss, trained = _epoch(net, opt, X, M, a, b, cfg, rng, hard, dev, known, n_items)
            history[f"{name}_loss"].append(round(loss, 6))
            if trained == 0:
                raise TrainingError(f"tower {name} epoch {epoch + 1} trained no batch: every batch had fewer than 2 "
                                    f"pairs (learn.tower_batch={cfg.tower_batch})")
            if not np.isfinite(loss):
                raise TrainingError(f"tower {name} epoch {epoch + 1}: the loss is {loss} (learning rate {lr})")
            line = f"tower {name} epoch {epoch + 1}/{epochs}: loss {loss:.4f}"
            if validate is not None:
                model.state = snapshot()
                score = float(validate(model))
                history[f"{name}_valid"].append(round(score, 6))
                line += f", validation {score:.4f}"
                if score > best[0]:
                    best, worse = (score, model.state, (name, epoch + 1, loss)), 0
                else:
                    worse += 1
            else:
                best = (0.0, None, (name, epoch + 1, loss))
            report(progress, line, stage="train")
            if validate is not None and worse >= patience:
                break
        if validate is not None:  # the next step starts from the best weights so far
            net.load_state_dict({k: torch.from_numpy(v) for k, v in best[1].items()})
    model.state = best[1] if validate is not None else snapshot()
    history["kept"] = {"step": best[2][0], "epoch": best[2][1], "loss": round(best[2][2], 6)} if best[2] else None
    model.history = history
    return model


def _is_pair(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """bool, shape of ``q``: which of the keys ``a * N + b`` in ``q`` are in sorted ``keys``."""
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return keys[pos] == q


def _epoch(net, opt, X, M, a, b, cfg: LearnConfig, rng, hard, dev, known: np.ndarray | None,
           n_items: int) -> tuple[float, int]:
    """One pass over (a sample of at most ``max_pairs`` of) the pairs; returns (mean loss, pairs trained on).

    ``known``: sorted keys ``a * n_items + b`` of all co-engaged pairs (not used as negatives), or None.
    """
    import torch

    order = rng.permutation(a.size)[:cfg.max_pairs]
    loss_fn = LOSSES[cfg.loss]
    total, n = 0.0, 0
    net.train()
    for i0 in range(0, order.size, cfg.tower_batch):
        idx = order[i0:i0 + cfg.tower_batch]
        if idx.size < 2:
            continue
        qa, qb = a[idx], b[idx]
        cols = qb
        if hard:
            extra = [hard[i][rng.integers(hard[i].size)] for i in qa.tolist() if i in hard]
            if extra:
                cols = np.concatenate([qb, np.asarray(extra, np.int64)])
        ta = torch.from_numpy(qa).to(dev)
        tc = torch.from_numpy(cols).to(dev)
        q = net({m: X[m][ta] for m in X}, {m: M[m][ta] for m in M})
        p = net({m: X[m][tc] for m in X}, {m: M[m][tc] for m in M})
        S = q @ p.T
        valid = (tc[None, :] != ta[:, None]) & (tc[None, :] != tc[:qa.size, None])
        if known is not None:  # a negative the log shows co-engaged with the anchor is a false negative
            valid &= torch.from_numpy(~_is_pair(known, qa[:, None] * n_items + cols[None, :])).to(dev)
        valid[torch.arange(qa.size), torch.arange(qa.size)] = False
        loss = loss_fn(S, valid, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * idx.size
        n += idx.size
    net.eval()
    return total / max(n, 1), n
