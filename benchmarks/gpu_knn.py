"""The kNN graph's exact search on a GPU: N x d vectors, every item's top-k, bf16 scores re-scored in fp32.

Measures the GPU path of ``reelsim lists --device cuda``
(:func:`reelsim.similarity.blocked.blocked_topk`, the function the job calls
for every modality group) on the clustered vectors of ``benchmarks/knn.py``,
centred and L2-normalised as reelsim normalises a catalog:

- the whole graph: every item's top-(k+1) (itself included, as the job asks),
  with the database moved to the device once; seconds, items/s, the GPU's
  peak memory;
- recall@k against fp32 exact search (the same function with
  ``precision="fp32"``) on ``--queries`` sampled items; the goal is 1.0;
- the fp32-only search of the same sample, for the speed-up of bf16.

It needs only numpy and torch (no FAISS, PyArrow or h5py), so on a GPU
machine whose image has torch it runs from the checkout as it is::

    mkdir -p /tmp/py && ln -sfn "$PWD" /tmp/py/reelsim && PYTHONPATH=/tmp/py \\
        python3 benchmarks/gpu_knn.py --n 1e6 --out "$OUT"

``--device cpu --n 2e4`` checks the script here (fp32 on a CPU; bf16 with
``--precision bf16``). The issue's goal: 10^6 x 256 in under 30 s on one
H200-class GPU, recall@10 = 1.0. The end-to-end lists job adds normalising
the catalog, the exact per-modality re-scoring and writing Parquet
(``python benchmarks/knn.py --sizes 1e6 --device cuda --baselines ""``,
which needs FAISS, PyArrow and h5py as well).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from knn import clustered

from reelsim.extractors.device import device_name
from reelsim.similarity.blocked import blocked_topk, to_device


def normalised(n: int, d: int, seed: int = 0) -> np.ndarray:
    """float32 (n, d): the clustered vectors, centred and L2-normalised (as a catalog's fused vectors)."""
    x = clustered(n, d, seed)
    x -= x.mean(axis=0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of each row's ``truth[:, :k]`` present in ``found[:, :k]``."""
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def synchronise(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def measure(n: int, d: int, k: int, device: str, precision: str, queries: int) -> dict:
    import torch

    out = {"n": n, "d": d, "k": k, "device": device, "precision": precision, "load": os.getloadavg()}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    t = time.perf_counter()
    x = normalised(n, d)
    out["make_s"] = round(time.perf_counter() - t, 2)
    low = precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
    t = time.perf_counter()
    xb = to_device(x, device, low)
    synchronise(device)
    out["to_device_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    _, found = blocked_topk(x, x, k + 1, device=device, precision=precision, xb_device=xb)
    synchronise(device)
    out["graph_s"] = round(time.perf_counter() - t, 3)
    out["items_per_s"] = round(n / out["graph_s"], 1)
    sample = np.random.default_rng(1).choice(n, size=min(queries, n), replace=False)
    exact = to_device(x, device, False)
    t = time.perf_counter()
    _, truth = blocked_topk(x[sample], x, k + 1, device=device, precision="fp32", xb_device=exact)
    synchronise(device)
    out["fp32_sample_s"] = round(time.perf_counter() - t, 3)
    out["fp32_graph_s_estimate"] = round(out["fp32_sample_s"] * n / sample.size, 1)
    out[f"recall_at_{k}"] = round(recall_at(found[sample], truth, k + 1), 5)
    if device.startswith("cuda"):
        out["gpu_peak_gb"] = round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**30, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=float, default=1e6, help="items (default 1e6)")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    ap.add_argument("--queries", type=int, default=1000, help="sampled items for recall (default 1000)")
    ap.add_argument("--out", type=Path, help="write gpu_knn.json here")
    args = ap.parse_args()
    device = device_name(args.device)
    result = measure(int(args.n), args.d, args.k, device, args.precision, args.queries)
    text = json.dumps(result)
    print(text)
    print(f"{result['n']} x {result['d']} on {result.get('gpu', device)}: graph {result['graph_s']} s "
          f"({result['items_per_s']} items/s), recall@{args.k} {result[f'recall_at_{args.k}']} against fp32 exact; "
          f"fp32 alone would take about {result['fp32_graph_s_estimate']} s; goal on an H200: under 30 s, recall 1.0")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_knn.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
