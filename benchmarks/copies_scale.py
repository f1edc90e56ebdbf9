"""The copy index at catalog size, with synthetic shot vectors: build time, memory, query time, recall.

Makes ``--items`` items of ``--shots`` shots with ``--regions`` region
vectors each (512-d unit vectors like the real ones: a random "look" shared
by many items plus the item's own detail), and plants ``--copies`` copies:
items whose shots are a noisy run of another item's shots (cosine about 0.9,
the level of a graded or re-encoded copy). Then, with the real code
(:func:`reelsim.similarity.copies.new_index`, :func:`~reelsim.similarity.copies.item_copies`):

- builds the index (exact below 2 * 10^6 vectors, IVF-PQ above) and prints
  the training and adding seconds, the index's bytes and the process's peak RSS;
- queries every planted copy (each region searched, shot matches aligned)
  and prints the seconds per query item and the recall of the planted
  source with its span (``shots`` matched).

Usage: python benchmarks/copies_scale.py [--items 100000] [--shots 20] [--regions 1] [--copies 200]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

from reelsim.similarity.copies import EXACT_BELOW, CopyRows, CopySettings, item_copies, new_index

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract import load_text  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def item_vectors(i: int, shots: int, regions: int, d: int, looks: np.ndarray) -> np.ndarray:
    """float32 (shots * regions, d): item ``i``'s region vectors (seeded by ``i``)."""
    rng = np.random.default_rng(i)
    look = looks[rng.integers(len(looks), size=shots * regions)]
    return unit(0.6 * look + 0.8 * unit(rng.standard_normal((shots * regions, d))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--shots", type=int, default=20)
    ap.add_argument("--regions", type=int, default=1)
    ap.add_argument("--copies", type=int, default=200)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    n_items, S, R, d = args.items, args.shots, args.regions, args.dim
    n = n_items * S * R
    print(f"{n_items} items x {S} shots x {R} regions = {n} vectors of {d} dims; {load_text()}")
    looks = unit(np.random.default_rng(12345).standard_normal((4096, d)))
    rng = np.random.default_rng(0)
    copies = rng.choice(n_items, size=(args.copies, 2), replace=False)  # (copy item, its source)
    source_of = dict(zip(copies[:, 0].tolist(), copies[:, 1].tolist()))

    def vectors(i: int) -> np.ndarray:
        if i in source_of:  # shots 5.. of the source, re-encoded: cosine ~0.9 with the source's
            src = item_vectors(source_of[i], S, R, d, looks)
            own = item_vectors(i, S, R, d, looks)
            shift = np.roll(src, -5 * R, axis=0)
            return unit(0.9 * shift + 0.44 * unit(own - (own * shift).sum(1, keepdims=True) * shift))
        return item_vectors(i, S, R, d, looks)

    t0 = time.perf_counter()
    sample = None
    if n >= EXACT_BELOW:
        take = rng.choice(n_items, size=min(n_items, 256 * 1024 // (S * R) + 1), replace=False)
        sample = np.concatenate([vectors(int(i)) for i in take])
    index = new_index(d, n, sample)
    t1 = time.perf_counter()
    chunk = max(1, 100_000 // (S * R))
    for a in range(0, n_items, chunk):
        index.add(np.concatenate([vectors(i) for i in range(a, min(n_items, a + chunk))]))
    t2 = time.perf_counter()
    import faiss

    size = faiss.serialize_index(index).nbytes
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"index {type(index).__name__}: train {t1 - t0:.1f} s, add {t2 - t1:.1f} s, {size / 1e6:.0f} MB "
          f"({size / n:.0f} B per vector), peak RSS {rss:.0f} MB")
    times = np.tile(np.stack([np.arange(S) * 2.0, np.arange(S) * 2.0 + 2.0], 1), (n_items, 1))
    rows = CopyRows([f"v{i}" for i in range(n_items)], np.repeat(np.arange(n_items, dtype=np.int32), S * R),
                    np.tile(np.repeat(np.arange(S, dtype=np.int32), R), n_items),
                    np.zeros(n, np.int8), times, np.arange(n_items + 1, dtype=np.int64) * S,
                    np.full(n_items, 2.0 * S))
    settings = CopySettings()
    found = spans = 0
    t3 = time.perf_counter()
    for c, src in copies:
        rec = {"vectors": vectors(int(c)), "shot": np.repeat(np.arange(S, dtype=np.int32), R),
               "code": np.zeros(S * R, np.int8), "shot_times": times[:S], "duration_s": 2.0 * S, "regions": False}
        segs = [s for s in item_copies(index, rows, int(c), rec, settings) if s.other == f"v{src}"]
        found += bool(segs)
        spans += bool(segs) and max(g.shots for g in segs) >= S - 5 - 2
    per = (time.perf_counter() - t3) / len(copies)
    print(f"query: {per * 1e3:.0f} ms per item ({S * R} regions, searched as they are); planted copies found "
          f"{found}/{len(copies)}, with >= {S - 7} of their {S - 5} shots aligned: {spans}/{len(copies)}; "
          f"{load_text()}")


if __name__ == "__main__":
    main()
