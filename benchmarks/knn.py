"""The kNN-graph job at N = 1e5, 1e6 (d = 256) against FAISS used directly: time, recall@10, peak memory.

For each size, each method runs in a fresh child process (so peak RSS is
its own), on the same synthetic clustered vectors (a Gaussian mixture:
``max(10, N/1000)`` components, each a random mean plus a random rank-16
covariance plus small isotropic noise, so neighbours have local structure
as real embeddings do), normalised as reelsim does it:

- ``reelsim``: the real job, as ``reelsim run`` does it after the items:
  normalise (centre + L2), save the catalog (while the index builds),
  choose, train and build the index, search every item's top-k in
  checkpointed batches with exact re-scoring, write the Parquet lists
  (``reelsim.similarity.rebuild.save_and_list``); with ``--add N``, then
  ``reelsim add``'s similarity part for N new items from the same mixture;
- ``ivf-4sqrt`` / ``ivf-sqrt``: FAISS ``IVF{nlist},PQ{d/4}x4fs,RFlat`` with
  nlist about 4 sqrt(N) (FAISS's guidance) or sqrt(N), trained on 40 points
  per list, every item searched; nprobe and the refinement's k_factor are
  the fastest setting of a grid that reaches recall 0.95 on the recall
  sample (chosen before the timed search);
- ``hnsw``: FAISS ``HNSW32``, efSearch chosen the same way.

Recall@10 is measured against exact search (FAISS brute force on the same
vectors) on a sample of queries. The table prints reelsim's time over each
baseline's, and over the best baseline at recall >= 0.95. Every child
starts with ``OMP_WAIT_POLICY=PASSIVE`` (as the reelsim CLI sets it;
``--omp-wait ''`` leaves the environment alone).

Other modes:
  --threshold   exact vs fast-scan IVF-PQ end to end for a sweep of N (where the
                exact index stops paying: EXACT_BELOW in similarity/index_choice.py)
  --parallel    the search phase at one N in one process (FAISS's threads) and as
                the Dask job on local clusters of --workers processes: per-block
                cost and scheduler overhead
  --device cuda reelsim's search on a GPU (exact, similarity/blocked.py)

Prints ``os.getloadavg()``: other processes share this machine's CPUs.

Usage::

    python benchmarks/knn.py --sizes 1e5,1e6 --add 1000
    python benchmarks/knn.py --sizes 1e6 --device cuda --baselines ""
    python benchmarks/knn.py --threshold --sweep 1e4,2e4,5e4,1e5
    python benchmarks/knn.py --parallel --n 1e5 --workers 1,2
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


def sample_rows(n: int, queries: int) -> np.ndarray:
    """The recall sample: ``min(queries, n)`` sorted rows, the same in every child."""
    return np.sort(np.random.default_rng(1).choice(n, size=min(queries, n), replace=False))


def truth_for(xb: np.ndarray, sample: np.ndarray, k: int, workdir: Path) -> np.ndarray:
    """Exact top-k of the sample queries (self excluded), computed once per N and shared by the children."""
    path = workdir / f"truth-{xb.shape[0]}-{k}-{sample.size}-{float(xb[:64].sum()):.6g}.npy"  # the data, roughly
    if path.is_file():
        return np.load(path)
    truth = exact_topk(xb[sample], xb, k, sample)
    np.save(path, truth)
    return truth


def benchmark_catalog(n: int, d: int, add: int):
    """(catalog of the first ``n`` vectors, catalog of the ``add`` new ones): raw, the same in every child."""
    from reelsim.similarity import CatalogEmbeddings

    raw = make_catalog(n + add, d)
    part = lambda s: CatalogEmbeddings(raw.ids[s], {"visual": raw.vectors["visual"][s]},
                                       {"visual": raw.masks["visual"][s]})
    return part(slice(0, n)), (part(slice(n, n + add)) if add else None)


def normalised_vectors(n: int, d: int, add: int) -> np.ndarray:
    """The benchmark catalog's vectors normalised as reelsim does it (centre, L2): what every method gets."""
    from reelsim.similarity import normalise

    return normalise(benchmark_catalog(n, d, add)[0]).vectors["visual"]


def one_size(n: int, d: int, k: int, index: str, oversample: int, queries: int, baseline_full: int,
             workdir: Path, batch: int, add: int = 0, numpy_baseline: bool = False, device: str = "cpu") -> dict:
    """reelsim's kNN-graph job end to end at one size (run in a child process).

    Timed: normalise (centre + L2) and save the catalog, choose, train and
    build the index, search every item with exact re-scoring, write the
    Parquet lists. With ``add``: then ``reelsim add``'s similarity part for
    ``add`` new items (:func:`reelsim.similarity.incremental.add_vectors`).
    """
    from reelsim.config import FusionConfig
    from reelsim.jobs.console import TerminalProgress
    from reelsim.similarity import normalise
    from reelsim.similarity.knn import recall_at
    from reelsim.similarity.rebuild import save_and_list
    from reelsim.storage.lists import read_lists

    out = {"method": "reelsim", "n": n, "d": d, "k": k, "index_request": index, "oversample": oversample,
           "device": device, "load_before": os.getloadavg()}
    if device != "cpu":
        import torch

        out["gpu"] = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device
    raw, new = benchmark_catalog(n, d, add)
    store = workdir / f"store-{n}"
    shutil.rmtree(store, ignore_errors=True)
    (store / "index").mkdir(parents=True)
    t0 = time.perf_counter()
    cat = normalise(raw)
    del raw
    (store / "index" / "items.json").write_text("{}")
    t1 = time.perf_counter()
    fusion = FusionConfig(weights={"visual": 1.0}, k=k, oversample=oversample, index=index, knn_batch=batch,
                          lists_formats=("parquet",), device=device)
    print(f"N={n}: catalog normalised in {t1 - t0:.1f} s; saving it, building index and lists", file=sys.stderr)
    summary = save_and_list(store, cat, fusion, progress=TerminalProgress())  # as `reelsim run` does; phases and a bar on stderr
    t2 = time.perf_counter()
    out.update(normalise_s=round(t1 - t0, 2), index_s=summary["index_s"], knn_s=summary["knn_s"],
               write_s=summary["write_s"], total_s=round(t2 - t0, 2), index=summary["index"],
               peak_rss_gb=round(peak_rss_gb(), 2), load_after=os.getloadavg())
    xb = cat.vectors["visual"]
    sample = sample_rows(n, queries)
    truth = truth_for(xb, sample, k, workdir)
    lists = read_lists(store / "lists" / "neighbors.parquet", cat.ids, k, ("visual",))
    out["recall_at_k"] = round(recall_at(lists.I[sample], truth, k), 4)
    out["recall_queries"] = int(sample.size)
    if add:
        out["add"] = measure_add(store, new, fusion, lists, cat.ids)
    if numpy_baseline:
        if n <= baseline_full:
            out["numpy_s"] = round(numpy_bruteforce(xb, np.arange(n), k), 2)
            out["numpy_extrapolated"] = False
        else:
            out["numpy_s"] = round(numpy_bruteforce(xb, sample, k) / sample.size * n, 1)
            out["numpy_extrapolated"] = True
    shutil.rmtree(store, ignore_errors=True)
    return out


def measure_add(store: Path, new, fusion, before, ids) -> dict:
    """``reelsim add``'s similarity part for the items of ``new`` (raw vectors): seconds, lists updated."""
    from reelsim.similarity.incremental import add_vectors
    from reelsim.storage.lists import read_parquet_table

    t = time.perf_counter()
    got = add_vectors(store, new, {i: {"kind": "product", "title": i} for i in new.ids}, fusion)
    seconds = time.perf_counter() - t
    table = read_parquet_table(store / "lists" / "neighbors.parquet")
    new_ids = set(new.ids)
    entered = {r for r, nb in zip(table["item"].to_pylist(), table["neighbor"].to_pylist())
               if nb in new_ids and r not in new_ids}
    return {"items": len(new.ids), "seconds": round(seconds, 2), "updated_lists": got["updated_lists"],
            "existing_lists_with_a_new_item": len(entered), "peak_rss_gb": round(peak_rss_gb(), 2),
            "load": os.getloadavg()}


#: FAISS search-time settings tried on the recall sample: (nprobe, k_factor of the exact refinement), or
#: efSearch. The fastest on the sample among those reaching the target recall is then timed over every item
#: (a user of FAISS would tune it the same way); when none reaches it, the one of highest recall.
IVF_SETTINGS = [(p, f) for p in (2, 4, 8, 16, 32) for f in (1, 2, 4, 8)]
HNSW_EF = [16, 32, 64, 128, 256]


def faiss_baseline(method: str, n: int, d: int, k: int, queries: int, workdir: Path, target: float,
                   batch: int, add: int) -> dict:
    """FAISS used directly on the same normalised vectors (run in a child process).

    ``ivf-4sqrt`` / ``ivf-sqrt``: ``IVF{nlist},PQ{d/4}x4fs,RFlat`` with nlist about 4 sqrt(N) (FAISS's
    guidance) or sqrt(N), trained on 40 points per list; ``hnsw``: ``HNSW32``. Timed: train + add +
    search of every item (batches of ``batch``). The search setting (nprobe and the refinement's
    k_factor, or efSearch) is the cheapest reaching ``target`` recall@k on the recall sample, chosen
    before the timed search (not timed).
    """
    import faiss

    from reelsim.similarity.index_choice import fastscan_nlist, nlist_for, training_rows
    from reelsim.similarity.knn import recall_at

    xb = normalised_vectors(n, d, add)
    sample = sample_rows(n, queries)
    truth = truth_for(xb, sample, k, workdir)
    out = {"method": method, "n": n, "d": d, "k": k, "load_before": os.getloadavg()}
    t0 = time.perf_counter()
    if method == "hnsw":
        factory = "HNSW32"
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    else:
        nlist = nlist_for(n) if method == "ivf-4sqrt" else fastscan_nlist(n)
        factory = f"IVF{nlist},PQ{d // 4}x4fs,RFlat"
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(xb[training_rows(n, nlist * 40)])
    for i0 in range(0, n, 65536):
        index.add(xb[i0:i0 + 65536])
    t1 = time.perf_counter()

    def search(xq, setting):
        if method == "hnsw":
            faiss.ParameterSpace().set_index_parameter(index, "efSearch", setting)
        else:
            faiss.extract_index_ivf(index).nprobe = setting[0]
            index.k_factor = setting[1]
        return index.search(xq, k + 1)[1]

    def without_self(I, rows):
        return np.array([[j for j in row if j != r][:k] for row, r in zip(I, rows)])

    tried = []
    for setting in (HNSW_EF if method == "hnsw" else IVF_SETTINGS):
        ts = time.perf_counter()
        I = search(xb[sample], setting)
        ts = time.perf_counter() - ts
        tried.append((setting, round(recall_at(without_self(I, sample), truth, k), 4), round(ts, 3)))
    good = [t for t in tried if t[1] >= target]
    setting = (min(good, key=lambda t: t[2]) if good else max(tried, key=lambda t: t[1]))[0]
    t2 = time.perf_counter()
    I_sample = None
    for i0 in range(0, n, batch):
        I = search(xb[i0:i0 + batch], setting)
        hit = (sample >= i0) & (sample < i0 + batch)
        if hit.any():
            I_sample = I[sample[hit] - i0] if I_sample is None else np.concatenate([I_sample, I[sample[hit] - i0]])
    t3 = time.perf_counter()
    out.update(factory=factory, setting=setting, tried=tried, build_s=round(t1 - t0, 2),
               search_s=round(t3 - t2, 2), total_s=round(t1 - t0 + t3 - t2, 2),
               recall_at_k=round(recall_at(without_self(I_sample, sample), truth, k), 4),
               peak_rss_gb=round(peak_rss_gb(), 2), load_after=os.getloadavg())
    return out


def run_child(args_list: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args_list], stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed with exit code {proc.returncode} (its stderr is above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def threshold_sweep(sizes: list[int], d: int, k: int, workdir: Path) -> list[dict]:
    """Exact vs fast-scan IVF-PQ whole-graph seconds per N (both re-scored exactly).

    Both are timed on a query sample and scaled to N queries (the search is
    linear in queries); the IVF build is counted once.
    """
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
        gi = GroupedIndex.build(cat, w, override="ivfpqfs")
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


def parallel_compare(n: int, d: int, k: int, oversample: int, workdir: Path, workers: list[int],
                     block: int) -> dict:
    """The search phase in one process (FAISS's threads) and as the Dask job (:mod:`reelsim.jobs.graph`).

    The same store, catalog and saved index for every run (each run resumes
    the saved index: the checkpoint's manifest is written first), so only
    the search phase differs. For each number of local worker processes:
    the search phase's wall time (cluster start excluded: the cluster is
    made and warmed before), the median seconds one block of ``block``
    queries takes on a worker, and the scheduler overhead (wall time beyond
    the blocks' own time divided by the workers).
    """
    import faiss
    from dask.distributed import Client, LocalCluster

    from reelsim.config import FusionConfig
    from reelsim.jobs.graph import dask_lists
    from reelsim.similarity import normalise, save_catalog
    from reelsim.similarity.rebuild import index_and_lists

    cat = normalise(make_catalog(n, d))
    w = {"visual": 1.0}
    store = workdir / "store-parallel"
    shutil.rmtree(store, ignore_errors=True)
    (store / "index").mkdir(parents=True)
    save_catalog(cat, w, store / "index" / "catalog.h5")
    (store / "index" / "items.json").write_text("{}")
    fusion = FusionConfig(weights=w, k=k, oversample=oversample, knn_batch=block, lists_formats=("parquet",))
    out = {"n": n, "block": block, "load_before": os.getloadavg(), "cpus": os.cpu_count()}
    first = index_and_lists(store, fusion, cat_norm=cat)
    out["index"] = first["index"]
    out["one_process_knn_s"] = first["knn_s"]
    out["one_process_write_s"] = first["write_s"]
    faiss.omp_set_num_threads(1)
    out["one_thread_knn_s"] = round(knn_seconds(store, fusion, cat), 2)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    out["dask"] = []
    for nw in workers:
        with LocalCluster(n_workers=nw, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                          local_directory=str(workdir / "dask-scratch")) as cluster, Client(cluster) as client:
            client.run(lambda: None)
            keep_index(store, fusion)
            r = dask_lists(store, fusion, client=client)
            r.update(workers=nw, load=os.getloadavg(),
                     per_block_overhead_s=round(r["scheduler_overhead_s"] / max(1, r["blocks_run"]) * nw, 4))
            out["dask"].append(r)
            print(json.dumps({k_: v for k_, v in r.items() if k_ != "index"}), file=sys.stderr)
    out["load_after"] = os.getloadavg()
    shutil.rmtree(store, ignore_errors=True)
    return out


def keep_index(store: Path, fusion) -> None:
    """Make the next job on ``store`` resume the saved index (a checkpoint of the same settings), not rebuild it."""
    from reelsim.similarity.grouped import GroupedIndex
    from reelsim.similarity.knn import Checkpoint
    from reelsim.similarity.rebuild import job_fingerprint

    gi = GroupedIndex.load(store / "index")
    Checkpoint(store / "lists" / ".knn-checkpoint", job_fingerprint(gi, gi.ntotal, fusion)).open()


def knn_seconds(store: Path, fusion, cat) -> float:
    """Seconds of the one-process search phase on the saved index."""
    from reelsim.similarity.rebuild import index_and_lists

    keep_index(store, fusion)
    return index_and_lists(store, fusion, cat_norm=cat)["knn_s"]


def print_parallel(r: dict) -> None:
    """The --parallel figures as a table."""
    print(f"\nsearch phase, N={r['n']}, blocks of {r['block']} queries ({r['cpus']} cores; load "
          f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f})")
    print(f"  one process, FAISS threads: {r['one_process_knn_s']} s (1 thread: {r['one_thread_knn_s']} s)")
    for d in r["dask"]:
        print(f"  Dask, {d['workers']} worker process(es): {d['knn_s']} s for {d['blocks_run']} blocks; a block "
              f"{d['block_s']} s on its worker; scheduler overhead {d['scheduler_overhead_s']} s in all "
              f"({d['per_block_overhead_s']} s per block); assemble + write {d['write_s']} s; load {d['load'][0]:.1f}")


def print_table(results: list[dict], k: int) -> None:
    """reelsim's and the baselines' time, recall and peak memory per N, with reelsim's time over each baseline's."""
    print(f"\n{'N':>9}  {'method':<44} {'total s':>8} {'recall@' + str(k):>9} {'peak GB':>8} "
          f"{'reelsim/this':>12}  load avg (before -> after)")
    for n in dict.fromkeys(r["n"] for r in results):
        rows = [r for r in results if r["n"] == n]
        ours = next((r for r in rows if r["method"] == "reelsim"), None)
        for r in rows:
            if r["method"] == "reelsim":
                idx = ";".join(g["factory"] + ("/" + ",".join(f"{a}={b}" for a, b in g["params"].items())
                                               if g["params"] else "") for g in r["index"].values())
                name = f"reelsim {idx}" + (f" on {r.get('gpu', r['device'])}" if r.get("device", "cpu") != "cpu" else "")
                detail = (f"   (normalise {r['normalise_s']}, index {r['index_s']} (catalog saved meanwhile), "
                          f"kNN {r['knn_s']}, write {r['write_s']})")
            else:
                name = f"FAISS {r['factory']} {r['setting']}"
                how = ("the fastest of the settings that reached 0.95" if r["recall_at_k"] >= 0.95 else
                       "none reached 0.95: the one of highest recall")
                detail = (f"   (build {r['build_s']}, search {r['search_s']}; {len(r['tried'])} settings tried on the "
                          f"recall sample, {how})")
            ratio = f"{ours['total_s'] / r['total_s']:.2f}" if ours and r is not ours else ""
            print(f"{n:>9}  {name:<44} {r['total_s']:>8} {r['recall_at_k']:>9} {r['peak_rss_gb']:>8} {ratio:>12}  "
                  f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}")
            print(f"{'':>11}{detail}")
            if r.get("add"):
                a = r["add"]
                print(f"{'':>11}   add {a['items']} items: {a['seconds']} s (similarity part), "
                      f"{a['updated_lists']} existing lists updated, {a['existing_lists_with_a_new_item']} "
                      f"list a new item entered; peak {a['peak_rss_gb']} GB; load {a['load'][0]:.1f}")
            if "numpy_s" in r:
                print(f"{'':>11}   NumPy blocked brute force: {'~' if r['numpy_extrapolated'] else ''}{r['numpy_s']} s")
        best = [r for r in rows if r is not ours and r["recall_at_k"] >= 0.95]
        if ours and best:
            b = min(best, key=lambda r: r["total_s"])
            print(f"{'':>11}-> reelsim / best FAISS baseline at recall >= 0.95 ({b['factory']}): "
                  f"{ours['total_s'] / b['total_s']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e5,1e6", help="comma-separated N (default: 1e5,1e6)")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--index", default="auto", help="index spec for the job (default: auto)")
    ap.add_argument("--oversample", type=int, default=2, help="candidates = oversample * k + 1 (default: 2)")
    ap.add_argument("--batch", type=int, default=16384, help="queries per kNN batch / checkpoint")
    ap.add_argument("--queries", type=int, default=2000, help="query sample for recall (and the NumPy baseline)")
    ap.add_argument("--baselines", default="ivf-4sqrt,ivf-sqrt,hnsw",
                    help="FAISS baselines: ivf-4sqrt, ivf-sqrt (IVF{nlist},PQ{d/4}x4fs,RFlat), hnsw (HNSW32); "
                    "'' for none")
    ap.add_argument("--add", type=int, default=0, help="then time `reelsim add` of this many new items")
    ap.add_argument("--device", default="cpu", help="where reelsim's kNN search runs: cpu (default), cuda, auto "
                    "(the FAISS baselines always run on the CPU)")
    ap.add_argument("--numpy", action="store_true", help="also the blocked NumPy brute force")
    ap.add_argument("--baseline-full", type=float, default=1e4,
                    help="full NumPy brute force up to this N, query-sample extrapolation above (default: 1e4)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threshold", action="store_true", help="exact vs IVF sweep instead")
    ap.add_argument("--sweep", default="1e4,2e4,5e4,1e5")
    ap.add_argument("--parallel", action="store_true", help="the search phase in one process vs as the Dask job")
    ap.add_argument("--n", type=float, default=1e5, help="N for --parallel")
    ap.add_argument("--workers", default="1,2", help="local worker processes for --parallel (default: 1,2)")
    ap.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default="reelsim", help=argparse.SUPPRESS)
    ap.add_argument("--omp-wait", default="PASSIVE", help="OMP_WAIT_POLICY for every child, as the reelsim CLI "
                    "sets it (default: PASSIVE; '' leaves the environment as it is)")
    args = ap.parse_args()
    if args.omp_wait and args.child is None:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait  # the children (reelsim and FAISS alike) start with it
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reelsim-knn-"))
    workdir.mkdir(parents=True, exist_ok=True)

    if args.child is not None:
        n = int(args.child)
        if args.method == "reelsim":
            r = one_size(n, args.d, args.k, args.index, args.oversample, args.queries, int(args.baseline_full),
                         workdir, args.batch, add=args.add, numpy_baseline=args.numpy, device=args.device)
        else:
            r = faiss_baseline(args.method, n, args.d, args.k, args.queries, workdir, 0.95, args.batch, args.add)
        print(json.dumps(r))
        return
    print(f"load average at start: {os.getloadavg()}  cpus: {os.cpu_count()}  "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    if args.threshold:
        rows = threshold_sweep([int(float(s)) for s in args.sweep.split(",")], args.d, args.k, workdir)
        print(f"{'N':>9} {'exact s':>9} {'IVF s':>8} {'IVF build s':>11} {'IVF recall':>10}")
        for r in rows:
            print(f"{r['n']:>9} {r['exact_graph_s']:>9} {r['ivf_graph_s']:>8} {r['ivf_build_s']:>11} "
                  f"{r['ivf_recall_at_k']:>10}")
        return
    if args.parallel:
        r = parallel_compare(int(args.n), args.d, args.k, args.oversample, workdir,
                             [int(w) for w in args.workers.split(",")], args.batch)
        print(json.dumps(r))
        print_parallel(r)
        return
    results = []
    methods = ["reelsim"] + [m for m in args.baselines.split(",") if m]
    for s in args.sizes.split(","):
        n = int(float(s))
        for method in methods:
            child = ["--child", str(n), "--method", method, "--d", str(args.d), "--k", str(args.k),
                     "--index", args.index, "--oversample", str(args.oversample), "--queries", str(args.queries),
                     "--baseline-full", str(args.baseline_full), "--workdir", str(workdir), "--batch", str(args.batch),
                     "--add", str(args.add), "--device", args.device] + (["--numpy"] if args.numpy else [])
            r = run_child(child)
            results.append(r)
            print(json.dumps(r), flush=True)
    print_table(results, args.k)


if __name__ == "__main__":
    main()
