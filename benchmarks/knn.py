"""The kNN-graph job at N = 1e4, 1e5, 1e6 (d = 256): time, peak memory, recall@10.

For each size, in a fresh child process (so peak RSS is that size's own):
synthetic clustered vectors (a Gaussian mixture: ``max(10, N/1000)``
components, each a random mean plus a random rank-16 covariance plus small
isotropic noise, so neighbours have local structure as real embeddings do),
then the real job through ``reelsim.similarity.rebuild.index_and_lists`` on a store:
normalise (centre + L2) and save the catalog, choose and build the index
(training included), search every item's top-k in checkpointed batches with
exact re-scoring, write the Parquet lists. Recall@10 is measured against
exact search (FAISS brute force on the same normalised vectors) on a sample
of queries. The NumPy baseline is a blocked ``xq @ xb.T`` + ``argpartition``
brute force: over all N queries where ``N <= --baseline-full``, otherwise on
the query sample, extrapolated to N queries (marked ``~``).

Other modes:
  --threshold   exact vs IVF end to end for a sweep of N (where the exact
                index stops paying: EXACT_BELOW in similarity/index_choice.py)
  --parallel    the search phase at one N with FAISS's OpenMP threads (2 and 1)
                against a Dask LocalCluster of 2 single-threaded worker processes

Prints ``os.getloadavg()``: other processes share this machine's CPUs.

Usage::

    python benchmarks/knn.py --sizes 1e4,1e5          # the default also runs 1e6
    python benchmarks/knn.py --threshold --sweep 1e4,2e4,5e4,1e5
    python benchmarks/knn.py --parallel --n 1e5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered(n: int, d: int, seed: int = 0, rank: int = 16) -> np.ndarray:
    """Gaussian-mixture vectors float32 (n, d): mean + rank-``rank`` covariance + noise per component."""
    rng = np.random.default_rng(seed)
    c = max(10, n // 1000)
    means = rng.normal(size=(c, d)).astype(np.float32)
    label = rng.integers(c, size=n)
    x = np.empty((n, d), np.float32)
    for j in range(c):
        rows = np.flatnonzero(label == j)
        A = (rng.normal(size=(rank, d)) * 0.8 / np.sqrt(rank)).astype(np.float32)
        z = rng.normal(size=(rows.size, rank)).astype(np.float32)
        x[rows] = means[j] + z @ A + 0.15 * rng.normal(size=(rows.size, d)).astype(np.float32)
    return x


def make_catalog(n: int, d: int, seed: int = 0):
    from reelsim.similarity import CatalogEmbeddings

    ids = [f"item-{i:07d}" for i in range(n)]
    return CatalogEmbeddings(ids, {"visual": clustered(n, d, seed)}, {"visual": np.ones(n, bool)})


def exact_topk(xq: np.ndarray, xb: np.ndarray, k: int, self_rows: np.ndarray) -> np.ndarray:
    """Exact top-k rows (int64 (B, k)) by inner product with FAISS brute force, self excluded."""
    import faiss

    D, I = faiss.knn(xq, xb, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    out = np.empty((len(xq), k), np.int64)
    for q in range(len(xq)):
        row = I[q][I[q] != self_rows[q]]
        out[q] = row[:k]
    return out


def numpy_bruteforce(xb: np.ndarray, rows: np.ndarray, k: int) -> float:
    """Seconds for the blocked NumPy brute-force top-k of ``rows`` (the baseline).

    Query blocks hold at most 2^26 scores (256 MB float32; argpartition needs
    about 3x that): at N = 1e6 a block of 1024 queries needed 4 GB per copy
    and the first 1e6 run was killed for memory in this baseline.
    """
    block = int(max(1, min(1024, 2**26 // max(1, xb.shape[0]))))
    t = time.perf_counter()
    for i0 in range(0, rows.size, block):
        q = rows[i0:i0 + block]
        S = xb[q] @ xb.T
        S[np.arange(q.size), q] = -np.inf
        part = np.argpartition(-S, k, axis=1)[:, :k]
        np.take_along_axis(S, part, axis=1).argsort(axis=1)
    return time.perf_counter() - t


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def one_size(n: int, d: int, k: int, index: str, oversample: int, queries: int, baseline_full: int,
             workdir: Path, batch: int) -> dict:
    """The job end to end at one size (run in a child process)."""
    from reelsim.similarity.rebuild import index_and_lists
    from reelsim.config import FusionConfig
    from reelsim.similarity import normalise, save_catalog
    from reelsim.storage.lists import read_lists

    out = {"n": n, "d": d, "k": k, "index_request": index, "oversample": oversample, "load_before": os.getloadavg()}
    raw = make_catalog(n, d)
    store = workdir / f"store-{n}"
    shutil.rmtree(store, ignore_errors=True)
    (store / "index").mkdir(parents=True)
    t0 = time.perf_counter()
    cat = normalise(raw)
    del raw
    save_catalog(cat, {"visual": 1.0}, store / "index" / "catalog.h5")
    t1 = time.perf_counter()
    fusion = FusionConfig(weights={"visual": 1.0}, k=k, oversample=oversample, index=index, knn_batch=batch,
                          lists_formats=("parquet",))
    print(f"N={n}: catalog normalised and saved in {t1 - t0:.1f} s; building index and lists", file=sys.stderr)
    summary = index_and_lists(store, fusion, cat_norm=cat, progress=True)  # phases and a bar on stderr
    t2 = time.perf_counter()
    out.update(normalise_s=round(t1 - t0, 2), index_s=summary["index_s"], knn_s=summary["knn_s"],
               write_s=summary["write_s"], total_s=round(t2 - t0, 2), index=summary["index"],
               peak_rss_gb=round(peak_rss_gb(), 2))
    # recall@k on a sample of queries against exact search
    xb = cat.vectors["visual"]
    rng = np.random.default_rng(1)
    sample = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    truth = exact_topk(xb[sample], xb, k, sample)
    lists = read_lists(store / "lists" / "neighbors.parquet", cat.ids, k, ("visual",))
    from reelsim.similarity.knn import recall_at

    out["recall_at_k"] = round(recall_at(lists.I[sample], truth, k), 4)
    out["recall_queries"] = int(sample.size)
    # NumPy blocked brute force baseline
    if n <= baseline_full:
        out["numpy_s"] = round(numpy_bruteforce(xb, np.arange(n), k), 2)
        out["numpy_extrapolated"] = False
    else:
        s = numpy_bruteforce(xb, sample, k)
        out["numpy_s"] = round(s / sample.size * n, 1)
        out["numpy_extrapolated"] = True
    out["speedup_vs_numpy"] = round(out["numpy_s"] / out["total_s"], 2)
    out["load_after"] = os.getloadavg()
    shutil.rmtree(store, ignore_errors=True)
    return out


def run_child(args_list: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args_list], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed with exit code {proc.returncode} (its stderr is above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def threshold_sweep(sizes: list[int], d: int, k: int, workdir: Path) -> list[dict]:
    """Exact vs IVF whole-graph seconds per N; exact timed on a query sample and scaled (it is linear in queries)."""
    from reelsim.similarity import GroupedIndex, knn_graph, normalise

    rows = []
    for n in sizes:
        cat = normalise(make_catalog(n, d))
        w = {"visual": 1.0}
        sample = np.arange(0, n, max(1, n // 5000))
        t = time.perf_counter()
        gi = GroupedIndex.build(cat, w, override="exact")
        exact = knn_graph(cat, gi, w, k, rows=sample)
        t_exact = (time.perf_counter() - t) * n / sample.size
        t = time.perf_counter()
        gi = GroupedIndex.build(cat, w, override="ivf")
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        approx = knn_graph(cat, gi, w, k, rows=sample)
        t_ivf = t_build + (time.perf_counter() - t) * n / sample.size
        from reelsim.similarity.knn import recall_at

        rows.append({"n": n, "exact_graph_s": round(t_exact, 2), "ivf_graph_s": round(t_ivf, 2),
                     "ivf_build_s": round(t_build, 2), "ivf": gi.describe()["groups"],
                     "ivf_recall_at_k": round(recall_at(approx.I, exact.I, k), 4), "load": os.getloadavg()})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def _dask_part(store: str, lo: int, hi: int, k: int, oversample: int) -> int:
    """Dask task: load the saved catalog and index, search rows lo..hi single-threaded."""
    import faiss

    from reelsim.similarity import GroupedIndex, knn_graph, load_catalog

    faiss.omp_set_num_threads(1)
    cat, w = load_catalog(Path(store) / "index" / "catalog.h5")
    gi = GroupedIndex.load(Path(store) / "index")
    lists = knn_graph(cat, gi, w, k, rows=np.arange(lo, hi), oversample=oversample)
    return int((lists.I >= 0).sum())


def parallel_compare(n: int, d: int, k: int, oversample: int, workdir: Path) -> dict:
    """Search phase: FAISS OpenMP threads (2, 1) in one process vs Dask 2 processes x 1 thread."""
    import faiss
    from dask.distributed import Client, LocalCluster

    from reelsim.similarity import GroupedIndex, knn_graph, normalise, save_catalog

    cat = normalise(make_catalog(n, d))
    w = {"visual": 1.0}
    store = workdir / "store-parallel"
    shutil.rmtree(store, ignore_errors=True)
    (store / "index").mkdir(parents=True)
    save_catalog(cat, w, store / "index" / "catalog.h5")
    gi = GroupedIndex.build(cat, w)
    gi.save(store / "index")
    out = {"n": n, "index": gi.describe()["groups"], "load_before": os.getloadavg()}
    for threads in (2, 1):
        faiss.omp_set_num_threads(threads)
        t = time.perf_counter()
        knn_graph(cat, gi, w, k, oversample=oversample)
        out[f"faiss_{threads}_threads_s"] = round(time.perf_counter() - t, 2)
    faiss.omp_set_num_threads(2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.run(lambda: None)
        t = time.perf_counter()
        bounds = np.linspace(0, n, 9).astype(int)  # 8 tasks over 2 workers
        futures = [client.submit(_dask_part, str(store), int(a), int(b), k, oversample, pure=False)
                   for a, b in zip(bounds[:-1], bounds[1:])]
        assert sum(f.result() for f in futures) > 0
        out["dask_2x1_s"] = round(time.perf_counter() - t, 2)
    out["load_after"] = os.getloadavg()
    shutil.rmtree(store, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e4,1e5,1e6", help="comma-separated N (default: 1e4,1e5,1e6)")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--index", default="auto", help="index spec for the job (default: auto)")
    ap.add_argument("--oversample", type=int, default=2, help="candidates = oversample * k + 1 (default: 2)")
    ap.add_argument("--batch", type=int, default=16384, help="queries per kNN batch / checkpoint")
    ap.add_argument("--queries", type=int, default=2000, help="query sample for recall and the NumPy baseline")
    ap.add_argument("--baseline-full", type=float, default=1e4,
                    help="full NumPy brute force up to this N, query-sample extrapolation above (default: 1e4)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threshold", action="store_true", help="exact vs IVF sweep instead")
    ap.add_argument("--sweep", default="1e4,2e4,5e4,1e5")
    ap.add_argument("--parallel", action="store_true", help="FAISS threads vs Dask instead")
    ap.add_argument("--n", type=float, default=1e5, help="N for --parallel")
    ap.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reelsim-knn-"))
    workdir.mkdir(parents=True, exist_ok=True)

    if args.child is not None:
        print(json.dumps(one_size(int(args.child), args.d, args.k, args.index, args.oversample, args.queries,
                                  int(args.baseline_full), workdir, args.batch)))
        return
    print(f"load average at start: {os.getloadavg()}  cpus: {os.cpu_count()}")
    if args.threshold:
        rows = threshold_sweep([int(float(s)) for s in args.sweep.split(",")], args.d, args.k, workdir)
        print(f"{'N':>9} {'exact s':>9} {'IVF s':>8} {'IVF build s':>11} {'IVF recall':>10}")
        for r in rows:
            print(f"{r['n']:>9} {r['exact_graph_s']:>9} {r['ivf_graph_s']:>8} {r['ivf_build_s']:>11} "
                  f"{r['ivf_recall_at_k']:>10}")
        return
    if args.parallel:
        print(json.dumps(parallel_compare(int(args.n), args.d, args.k, args.oversample, workdir)))
        return
    results = []
    for s in args.sizes.split(","):
        n = int(float(s))
        child = ["--child", str(n), "--d", str(args.d), "--k", str(args.k), "--index", args.index,
                 "--oversample", str(args.oversample), "--queries", str(args.queries),
                 "--baseline-full", str(args.baseline_full), "--workdir", str(workdir), "--batch", str(args.batch)]
        r = run_child(child)
        results.append(r)
        print(json.dumps(r), flush=True)
    print(f"\n{'N':>9} {'index':<22} {'total s':>8} {'index s':>8} {'kNN s':>7} {'write s':>7} {'peak GB':>8} "
          f"{'recall@' + str(args.k):>9} {'NumPy s':>9} {'speedup':>7}  load avg (before -> after)")
    for r in results:
        idx = ";".join(g["factory"] + ("/" + ",".join(f"{a}={b}" for a, b in g["params"].items()) if g["params"] else "")
                       for g in r["index"].values())
        print(f"{r['n']:>9} {idx:<22} {r['total_s']:>8} {r['index_s']:>8} {r['knn_s']:>7} {r['write_s']:>7} "
              f"{r['peak_rss_gb']:>8} {r['recall_at_k']:>9} {('~' if r['numpy_extrapolated'] else '') + str(r['numpy_s']):>9} "
              f"{r['speedup_vs_numpy']:>7}  {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}")


if __name__ == "__main__":
    main()
