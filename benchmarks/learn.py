"""Learned lists against the simple peers, on two generators, and training at scale: the goals of docs/learning.md.

Two worlds, so that the choices are not tuned to one:

- ``synthetic``: ``reelsim.similarity.synthetic`` (content embeddings of the
  default models' sizes with hidden categories, segments and styles; users
  with 1-3 topics; sessions; purchases);
- ``shop``: ``benchmarks/shopworld.py`` (50 categories in 25 complement
  pairs, look-alike titles embedded with the real MiniLM text model, brands
  across categories, Zipf popularity, users with 1-3 interests, sessions).

For each world:

1. makes the catalog and the log and saves a store without media
   (``index/catalog.h5``, ``index/items.json`` with each item's category);
2. trains through the real CLI, ``reelsim train --interactions FILE --store DIR --json``,
   in a child process: wall time, CPU time, peak RSS and what was chosen on validation;
3. (unless ``--no-evaluate``) evaluates in this process
   (``reelsim.similarity.evaluate``): 20% cold items, the last 20% of each
   user's rows held out; reelsim's spaces and the peers (popularity, EASE with
   λ on validation, implicit ALS tuned on validation, a ridge map from content
   to EASE rows for cold items, content), side by side: recall@10, NDCG@10,
   precision@10 of the same category, coverage, cold exposure;
4. prints the goals, met or missed, and ``os.getloadavg()`` (the machine is shared).

Usage::

    python benchmarks/learn.py                                   # both worlds, 4 000 items, ~170 000 rows
    python benchmarks/learn.py --world synthetic --items 1e5 --interactions 1e6 --no-evaluate   # scale
    python benchmarks/learn.py --world shop --json shop.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reelsim.config import Config
from reelsim.reporting import silent
from reelsim.similarity.catalog import CatalogEmbeddings, load_catalog
from reelsim.similarity.evaluate import evaluate, format_table
from reelsim.similarity.synthetic import MODEL_DIMS, make_catalog, sample_log, save_store
from reelsim.storage.interactions import read_interactions
from reelsim.storage.layout import StoreLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shopworld  # noqa: E402  (benchmarks/ is not a package)


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def make_synthetic(store: Path, n: int, rows: int, users: int, seed: int) -> tuple[Path, np.ndarray]:
    """Generator 1 as a store and a log file; returns (log path, category per item)."""
    syn = make_catalog(n, dims=MODEL_DIMS, seed=seed)
    views = int(rows / (1 + 0.25 * 0.8))  # purchases: 25% of the 80% topic views
    log = sample_log(syn.topic, syn.popularity, n_users=users, n_interactions=views, seed=seed + 1)
    save_store(store, syn.raw, categories=dict(zip(syn.raw.ids, syn.category.tolist())))
    return log.write(store / "interactions.parquet", syn.raw.ids), syn.category


def make_shop(store: Path, n: int, rows: int, users: int, seed: int) -> tuple[Path, np.ndarray]:
    """Generator 2 (benchmarks/shopworld.py) as a store and a log file, titles embedded with MiniLM."""
    world = shopworld.make_world(n, n_users=users, n_interactions=int(rows / 1.1), seed=seed)
    text = shopworld.embed_titles(world.titles)
    raw = CatalogEmbeddings(world.ids, {"text": text}, {"text": np.ones(n, bool)})
    save_store(store, raw, titles=dict(zip(world.ids, world.titles)),
               categories=dict(zip(world.ids, world.category.tolist())))
    return world.log.write(store / "interactions.parquet", world.ids), world.category


def train_cli(store: Path, path: Path, settings: list[str]) -> dict:
    """``reelsim train --json`` in a child process: its summary, wall and CPU seconds, peak RSS."""
    cmd = [sys.executable, "-m", "reelsim.jobs.cli", "train", "--interactions", str(path), "--store", str(store),
           "--json"] + [a for s in settings for a in ("--set", s)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(proc.returncode)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (usage.ru_utime - before.ru_utime) + (usage.ru_stime - before.ru_stime)
    return summary | {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
                      "load_after": _load()}


def goals(result: dict, train: dict, n: int) -> dict:
    """The issue's goals: {name: (value, needed, met, detail)}."""
    warm, cold = result["warm"], result["cold"]
    r = lambda g, s: (g.get(s) or {}).get("recall@10") or 0.0
    p = lambda g, s: (g.get(s) or {}).get("precision@10") or 0.0
    ours = ("learned", "blend")
    best_warm = max(ours, key=lambda s: r(warm, s))
    peer_warm = max((s for s in ("ease", "als", "popularity") if s in warm), key=lambda s: r(warm, s))
    best_cold = max(ours, key=lambda s: r(cold, s))
    peer_cold = max((s for s in ("ridge", "popularity") if s in cold), key=lambda s: r(cold, s))
    best_p = max(ours, key=lambda s: p(cold, s))
    out = {
        f"warm R@10: best reelsim ({best_warm}) >= best of EASE/ALS/popularity ({peer_warm})":
            (r(warm, best_warm), r(warm, peer_warm)),
        f"cold R@10: best reelsim ({best_cold}) >= best of ridge/popularity ({peer_cold})":
            (r(cold, best_cold), r(cold, peer_cold)),
        f"cold P@10: best reelsim ({best_p}) >= content": (p(cold, best_p), p(cold, "content")),
    }
    limit = 60.0 if n <= 10_000 else 300.0
    out[f"training <= {limit:.0f} s (wall)"] = (-train["wall_s"], -limit)
    out[f"training <= {limit:.0f} s (CPU)"] = (-train["cpu_s"], -limit)
    if n > 10_000:
        out["training peak RSS <= 4 GB"] = (-train["peak_rss_gb"], -4.0)
    return {k: {"value": abs(v), "needed": abs(need), "met": v >= need - 1e-12} for k, (v, need) in out.items()}


def run_world(world: str, args) -> dict:
    n, rows = int(args.items), int(args.interactions)
    users = int(args.users or (8000 * n // 4000 if world == "shop" else rows // 40))
    store = (args.store / world) if args.store else Path(tempfile.mkdtemp(prefix=f"reelsim-learn-{world}-"))
    store.mkdir(parents=True, exist_ok=True)
    out: dict = {"world": world, "items": n, "users": users, "load_start": _load()}
    t0 = time.perf_counter()
    make = make_shop if world == "shop" else make_synthetic
    path, category = make(store, n, rows, users, args.seed)
    out["generate_s"] = round(time.perf_counter() - t0, 1)
    print(f"\n=== {world}: {n} items, {users} users -> {store} (generated in {out['generate_s']} s, "
          f"load average {_load()})")
    train = train_cli(store, path, args.settings)
    out["train"] = train
    print(f"reelsim train: {train['wall_s']} s wall, {train['cpu_s']} s CPU, peak RSS {train['peak_rss_gb']} GB "
          f"(load average {train['load_after']}); {train['rows']} rows, warm model {train['warm_model']} "
          f"({train['warm_model_reason']}), tower kept {train['tower_kept']}, content mix {train['content_mix']}")
    print(f"  rules {train['rules']}")
    if not args.no_evaluate:
        cfg = Config().with_settings(args.settings).learn
        cat, weights = load_catalog(StoreLayout(store).catalog)
        log = read_interactions(path, cat.ids)
        t1 = time.perf_counter()
        result, _ = evaluate(cat, log, cfg, weights, category=category, peers=("ease", "als", "ridge"),
                             progress=(lambda r: print(r.message)) if args.verbose else silent)
        out["evaluate"] = result
        out["evaluate_s"] = round(time.perf_counter() - t1, 1)
        print(f"\nevaluate ({out['evaluate_s']} s, load average {_load()}):")
        print(format_table(result))
        out["goals"] = goals(result, train, n)
    else:
        limit = 60.0 if n <= 10_000 else 300.0
        out["goals"] = {f"training <= {limit:.0f} s (wall)": {"value": train["wall_s"], "needed": limit,
                                                              "met": train["wall_s"] <= limit},
                        f"training <= {limit:.0f} s (CPU)": {"value": train["cpu_s"], "needed": limit,
                                                             "met": train["cpu_s"] <= limit},
                        "training peak RSS <= 4 GB": {"value": train["peak_rss_gb"], "needed": 4.0,
                                                      "met": train["peak_rss_gb"] <= 4.0}}
    out["load_end"] = _load()
    print(f"\ngoals, {world} (load average {out['load_end']}):")
    for k, g in out["goals"].items():
        print(f"  {'met   ' if g['met'] else 'MISSED'} {k}: {g['value']:.4g} (needs {g['needed']:.4g})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=("both", "synthetic", "shop"), default="both")
    ap.add_argument("--items", type=float, default=4000)
    ap.add_argument("--interactions", type=float, default=170_000, help="rows in the log (views + purchases)")
    ap.add_argument("--users", type=float, default=None,
                    help="default: 2 per item (shop), one per 40 rows (synthetic)")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="learn.X=Y")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-evaluate", action="store_true", help="train only (time and memory)")
    ap.add_argument("--verbose", action="store_true", help="print evaluate's progress")
    ap.add_argument("--store", type=Path, default=None, help="where the stores go (default: temp folders)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    print(f"load average at start: {_load()}")
    worlds = ("synthetic", "shop") if args.world == "both" else (args.world,)
    out = {w: run_world(w, args) for w in worlds}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
