"""Learning from interactions at 10^5 items and 10^6 interactions: the goals of docs/learning.md in one run.

1. Makes a synthetic catalog (``reelsim.similarity.synthetic``: content
   embeddings of the default models' sizes, hidden categories, segments and
   styles) and a log of about ``--interactions`` rows (views in sessions,
   purchases a subset of views), and saves a store without media
   (``index/catalog.h5``).
2. Trains through the real CLI, ``reelsim train --interactions FILE --store DIR``,
   in a child process: wall time and the child's peak RSS.
3. Evaluates in this process (``reelsim.similarity.evaluate``): cold items
   held out with their interactions, test users held out; recall@10 and
   NDCG@10 for cold (content vs learned), warm (content vs ELSA vs blend) and
   popularity; then the tower again with each of the other losses on the same
   split and the same ELSA (the self-adversarial comparison), and with hard
   negatives when ``--hard`` is given.
4. Prints the goals, met or missed, and ``os.getloadavg()`` (the machine is shared).

Usage::

    python benchmarks/learn.py                         # 1e5 items, 1e6 interactions
    python benchmarks/learn.py --items 2e4 --interactions 2e5 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reelsim.config import TOWER_LOSSES, Config
from reelsim.similarity.catalog import load_catalog
from reelsim.similarity.evaluate import evaluate, format_table, make_split
from reelsim.similarity.synthetic import MODEL_DIMS, make_catalog, sample_log, save_store
from reelsim.storage.interactions import read_interactions
from reelsim.storage.layout import StoreLayout


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=float, default=1e5)
    ap.add_argument("--interactions", type=float, default=1e6, help="rows in the log (views + purchases)")
    ap.add_argument("--users", type=float, default=None, help="default: items / 4")
    ap.add_argument("--small-dims", action="store_true", help="64/32/64/48-d content instead of the models' sizes")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="learn.X=Y")
    ap.add_argument("--hard", type=int, default=0, help="also train with this many hard negatives per anchor")
    ap.add_argument("--store", type=Path, default=None, help="where the store goes (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    n, rows = int(args.items), int(args.interactions)
    users = int(args.users or n // 4)
    cfg = Config().with_settings(args.settings).learn
    store = args.store or Path(tempfile.mkdtemp(prefix="reelsim-learn-"))
    out: dict = {"items": n, "users": users, "load_start": _load()}
    print(f"load average at start: {out['load_start']}")

    t0 = time.perf_counter()
    dims = {"visual": 64, "audio": 32, "image": 64, "text": 48} if args.small_dims else MODEL_DIMS
    syn = make_catalog(n, dims=dims, seed=0)
    views = int(rows / (1 + 0.25 * 0.8))  # purchases: 25% of the 80% topic views
    log = sample_log(syn.topic, syn.popularity, n_users=users, n_interactions=views, seed=1)
    save_store(store, syn.raw)
    path = log.write(store / "interactions.parquet", syn.raw.ids)
    del syn
    out["log_rows"] = int(log.user.size)
    out["generate_s"] = round(time.perf_counter() - t0, 1)
    print(f"generated {n} items ({', '.join(f'{m} {d}' for m, d in dims.items())}-d), {log.user.size} rows, "
          f"{users} users in {out['generate_s']} s -> {store}")
    del log

    # training through the CLI, in a child process: time and peak memory of training alone
    cmd = [sys.executable, "-m", "reelsim.jobs.cli", "train", "--interactions", str(path), "--store", str(store),
           "--json"] + [a for s in args.settings for a in ("--set", s)]
    t1 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    train_s = time.perf_counter() - t1
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss / 2**20  # KiB -> GiB
    cpu_s = usage.ru_utime + usage.ru_stime
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    out["train"] = summary | {"wall_s": round(train_s, 1), "cpu_s": round(cpu_s, 1), "peak_rss_gb": round(peak, 2),
                              "load_after": _load()}
    print(f"reelsim train: {train_s:.1f} s wall, {cpu_s:.1f} s CPU (ELSA {summary['elsa_s']} s, tower "
          f"{summary['tower_s']} s wall), peak RSS {peak:.2f} GB, load average {_load()}")

    # evaluation
    cat, weights = load_catalog(StoreLayout(store).catalog)
    inter = read_interactions(path, cat.ids)
    split = make_split(inter, cat.n, cfg)
    t2 = time.perf_counter()
    result, model = evaluate(cat, inter, cfg, weights, split=split)
    out["evaluate"] = result
    out["evaluate_s"] = round(time.perf_counter() - t2, 1)
    print(f"\nevaluate (loss {cfg.loss}, {out['evaluate_s']} s, load average {_load()}):")
    print(format_table(result))
    variants = [(loss, dataclasses.replace(cfg, loss=loss)) for loss in TOWER_LOSSES if loss != cfg.loss]
    if args.hard:
        variants.append((f"{cfg.loss} + {args.hard} hard negatives", dataclasses.replace(cfg, hard_negatives=args.hard)))
    out["variants"] = {cfg.loss: result["cold"]["learned"]}
    for name, c in variants:
        r, _ = evaluate(cat, inter, c, weights, split=split, reuse_elsa=model)
        out["variants"][name] = r["cold"]["learned"]
    print("\ncold items, learned space, by tower loss (same split, same ELSA):")
    for name, m in out["variants"].items():
        print(f"  {name:<40} recall@10 {m['recall@10']:.4f}  NDCG@10 {m['ndcg@10']:.4f}")

    cold, warm = result["cold"], result["warm"]
    r = lambda g, s: g[s]["recall@10"]
    goals = {
        "cold learned >= 2x content": (r(cold, "learned") / max(r(cold, "content"), 1e-9), 2.0),
        "warm ELSA >= 1.5x content": (r(warm, "elsa") / max(r(warm, "content"), 1e-9), 1.5),
        "warm blend >= max(ELSA, content)": (r(warm, "blend") / max(r(warm, "elsa"), r(warm, "content"), 1e-9), 1.0),
        "self-adversarial >= in-batch (cold learned)": (
            out["variants"]["self-adversarial"]["recall@10"] / max(out["variants"]["in-batch"]["recall@10"], 1e-9), 1.0),
        "training under 5 min (wall)": (300.0 / max(train_s, 1e-9), 1.0),
        "training under 5 min (CPU time, 1 thread)": (300.0 / max(cpu_s, 1e-9), 1.0),
        "training peak RSS under 4 GB": (4.0 / max(peak, 1e-9), 1.0),
    }
    out["goals"] = {k: {"ratio": round(v, 3), "needed": need, "met": v >= need} for k, (v, need) in goals.items()}
    out["load_end"] = _load()
    print(f"\ngoals (load average {out['load_end']}):")
    for k, g in out["goals"].items():
        print(f"  {'met   ' if g['met'] else 'MISSED'} {k}: ratio {g['ratio']} (needs >= {g['needed']})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
