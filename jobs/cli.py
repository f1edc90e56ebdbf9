"""``reelsim``: a thin command line over the runner, the store and the registries.

Exit codes: 0 success; 2 usage errors (bad flags, unknown item id, missing
store, a model's weights file not found); 3 a batch where some items failed and the rest completed; 1 any
other error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reelsim import __version__
from reelsim.errors import ReelsimError, StoreError, UsageError, WeightsNotFoundError

EXAMPLES = """\
examples:
  reelsim demo --store /tmp/reelsim-demo          # sample catalog, end to end
  reelsim run media/ catalog.jsonl --store out/    # folder of videos + a manifest
  reelsim run catalog.csv --store out/ --workers 4 --device cuda
  reelsim run catalog.jsonl --store out/ --scheduler tcp://10.0.0.5:8786
  reelsim shots trailer-042 --store out/ --json
  reelsim similar trailer-042 --store out/ -k 5
  reelsim add new-titles.jsonl --store out/        # embed, index and list new items only
  reelsim lists --store out/ --index "IVF4096,Flat" --lists-format parquet,hdf5
  reelsim lists --store out/ --dedup 0.95 --blocklist "lottery" --blocklist-threshold 0.6
  reelsim export --store out/ --format hdf5 --to features.h5
  reelsim models                                   # which models this machine can run

manifest rows (.jsonl or .csv) have any of: id, video, image, title, description;
relative paths resolve against the manifest's folder.
"""


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--scheduler", metavar="ADDR", help="existing Dask scheduler, e.g. tcp://host:8786 "
                   "(default: start a local cluster of worker processes)")
    g.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: cores/2, 1..4)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where models run (default: auto = CUDA when present)")
    g.add_argument("--batch-size", type=int, metavar="N", help="clips/images per forward pass (default: 8)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group("models (see `reelsim models`)")
    m.add_argument("--video-model", metavar="NAME", help="3D-CNN for shot clips (default: effnet-lite0-inflated)")
    m.add_argument("--video-weights", metavar="PATH", help="weights file for a Kinetics video model")
    m.add_argument("--shot-threshold", type=float, metavar="T", help="shot detector threshold (default: 27)")
    s = p.add_argument_group("similarity")
    s.add_argument("--weights", metavar="SPEC", help="modality weights, e.g. visual=1,audio=0.5,image=1,text=1")
    s.add_argument("-k", type=int, metavar="N", help="neighbours per item in the lists (default: 10)")
    s.add_argument("--pca", type=int, metavar="N", help="per-modality PCA to N dimensions, learned on the catalog "
                   "and stored with it (default: off)")
    s.add_argument("--whiten", action="store_true", default=None, help="with --pca: PCA whitening")
    _add_list_options(s)


def _add_list_options(s) -> None:
    """Index, kNN job and list hygiene flags (run, demo, add, lists)."""
    s.add_argument("--index", metavar="SPEC", help="auto (by size: exact below 30k items per modality group, "
                   "else IVF; OPQ+IVF-PQ above --memory-budget), a kind exact|ivf|hnsw|ivfpq, or a FAISS "
                   "index_factory string such as 'IVF4096,Flat' (default: auto)")
    s.add_argument("--memory-budget", type=float, metavar="GB", help="fused vectors above this are compressed "
                   "with OPQ+IVF-PQ by --index auto (default: 4)")
    s.add_argument("--knn-batch", type=int, metavar="N", help="queries per kNN batch and checkpoint (default: 16384)")
    s.add_argument("--lists-format", metavar="LIST", help="comma-separated: parquet,jsonl,hdf5 "
                   "(default: parquet,jsonl; parquet is always written)")
    s.add_argument("--dedup", type=float, metavar="T", help="collapse near-duplicates: drop a neighbour whose "
                   "fused score with a listed one is >= T, e.g. 0.95 (default: off)")
    s.add_argument("--mmr", type=float, metavar="LAMBDA", help="diversify lists by maximal marginal relevance, "
                   "LAMBDA in [0, 1], 1 = plain ranking (default: off)")
    s.add_argument("--blocklist", action="append", metavar="PHRASE", help="never list items whose text is close "
                   "to PHRASE (repeatable; MiniLM cosine >= --blocklist-threshold)")
    s.add_argument("--blocklist-threshold", type=float, metavar="T", help="cosine for --blocklist (default: 0.5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reelsim",
        description="Content-based 'more like this' lists for catalogs of videos and products: "
        "shots and scenes, 3D-CNN / audio / image / text features in HDF5, fused FAISS neighbour lists.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"reelsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="process a catalog into a store and write neighbour lists",
                       description="Decode each video once, detect shots and scenes, extract features per shot, "
                       "write one HDF5 shard per item, then fuse and write every item's top-k list. "
                       "Unchanged items are skipped on a re-run. Writes STORE/report.json. "
                       "Exit 0: all items ok; 3: some failed (see report.json), the rest completed.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folder of media, .jsonl/.csv manifest, or video file")
    p.add_argument("--store", required=True, type=Path, metavar="DIR", help="feature store folder (created)")
    _add_run_options(p)

    p = sub.add_parser("add", help="analyse new items and add them to an existing store's index and lists",
                       description="Embed the new items (like `run`), normalise them with the catalog's stored "
                       "transform, add them to the FAISS index, compute their lists and update only the lists "
                       "they enter; nothing is rebuilt. Items already in the catalog are skipped. "
                       "Exit 0: all items ok; 3: some failed, the rest were added.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folder of media, .jsonl/.csv manifest, or video file")
    p.add_argument("--store", required=True, type=Path, metavar="DIR", help="store made by `reelsim run`")
    _add_run_options(p)

    p = sub.add_parser("lists", help="rebuild the index and every list from the store's catalog (resumable)",
                       description="Choose and build the FAISS index for the stored catalog, then compute every "
                       "item's top-k in batches with a progress bar. Finished batches are checkpointed in "
                       "STORE/lists/.knn-checkpoint/; running the same command again after a kill resumes "
                       "and gives the same lists. Prints a JSON summary.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("--weights", metavar="SPEC", help="modality weights (default: those the catalog was built with)")
    p.add_argument("-k", type=int, metavar="N", help="neighbours per item (default: 10)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_list_options(p.add_argument_group("index and lists"))

    p = sub.add_parser("shots", help="shots and scenes of one video item")
    p.add_argument("item", metavar="ITEM")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")

    p = sub.add_parser("similar", help="an item's nearest neighbours")
    p.add_argument("item", metavar="ITEM")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("-k", type=int, default=10, metavar="N", help="number of neighbours (default: 10)")
    p.add_argument("--weights", metavar="SPEC", help="re-weight modalities for this query, e.g. text=0")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")

    p = sub.add_parser("export", help="write features (hdf5) or lists (parquet, jsonl) to one file")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("--format", required=True, choices=("hdf5", "parquet", "jsonl"))
    p.add_argument("--to", required=True, type=Path, metavar="PATH")

    p = sub.add_parser("demo", help="generate a sample catalog with ffmpeg and run everything on it")
    p.add_argument("--store", type=Path, default=Path("reelsim-demo"), metavar="DIR",
                   help="where sample media and results go (default: ./reelsim-demo)")
    _add_run_options(p)

    sub.add_parser("models", help="list registered models and whether this machine can run them")
    return parser


def fusion_overrides(args: argparse.Namespace) -> dict:
    """FusionConfig overrides from the similarity flags (None = not given)."""
    from reelsim.pipeline.config import parse_weights

    get = lambda name: getattr(args, name, None)
    fusion = {"k": get("k"), "pca_dim": get("pca"), "whiten": get("whiten"), "index": get("index"),
              "memory_budget_gb": get("memory_budget"), "knn_batch": get("knn_batch"), "dedup": get("dedup"),
              "mmr": get("mmr"), "blocklist_threshold": get("blocklist_threshold")}
    if get("weights"):
        fusion["weights"] = parse_weights(args.weights)
    for name, flag in (("k", "-k"), ("pca", "--pca"), ("knn_batch", "--knn-batch")):
        if get(name) is not None and get(name) < 1:
            raise UsageError(f"{flag} must be at least 1")
    if get("memory_budget") is not None and not get("memory_budget") > 0:
        raise UsageError("--memory-budget must be positive")
    if get("dedup") is not None and not -1 <= args.dedup <= 1:
        raise UsageError("--dedup must be in [-1, 1]")
    if get("mmr") is not None and not 0 <= args.mmr <= 1:
        raise UsageError("--mmr must be in [0, 1]")
    if get("blocklist"):
        fusion["blocklist"] = tuple(p.strip() for p in args.blocklist if p.strip())
    if get("lists_format"):
        from reelsim.similarity.lists import LIST_FILES

        formats = tuple(f.strip() for f in args.lists_format.split(",") if f.strip())
        bad = [f for f in formats if f not in LIST_FILES]
        if bad or not formats:
            raise UsageError(f"--lists-format: expected some of {', '.join(LIST_FILES)}, got {args.lists_format!r}")
        fusion["lists_formats"] = formats
    return fusion


def config_from_args(args: argparse.Namespace):
    from reelsim.pipeline.config import Config

    cfg = Config()
    fusion = fusion_overrides(args)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    return cfg.with_overrides(
        models={"device": args.device, "batch_size": args.batch_size, "visual": args.video_model,
                "video_weights": str(Path(args.video_weights).resolve()) if args.video_weights else None},
        shots={"threshold": args.shot_threshold},
        fusion=fusion,
    )


def _check_models(cfg) -> None:
    """Fail fast, before starting a cluster, on a model that cannot run here."""
    from reelsim.extractors.device import resolve_device
    from reelsim.extractors.registry import get_class
    from reelsim.extractors.weights import resolve_weights

    resolve_device(cfg.models.device)
    cls = get_class("visual", cfg.models.visual)
    if hasattr(cls, "weights_spec"):  # models with downloaded weights: is the file here?
        resolve_weights(cls.weights_spec(), cfg.models.video_weights)


def cmd_run(args) -> int:
    from reelsim.jobs.runner import run_catalog

    cfg = config_from_args(args)
    _check_models(cfg)
    report = run_catalog(args.inputs, args.store, cfg, scheduler=args.scheduler, workers=args.workers,
                         progress=not args.no_progress)
    print(report.describe(args.store))
    return report.exit_code


def cmd_add(args) -> int:
    from reelsim.jobs.runner import run_catalog

    cfg = config_from_args(args)
    if not (Path(args.store) / "index" / "catalog.h5").is_file():
        raise StoreError(f"no index in {args.store}: run `reelsim run INPUT --store {args.store}` first")
    _check_models(cfg)
    report = run_catalog(args.inputs, args.store, cfg, scheduler=args.scheduler, workers=args.workers,
                         progress=not args.no_progress, lists="add")
    print(report.describe(args.store))
    return report.exit_code


def cmd_lists(args) -> int:
    from reelsim.jobs.lists import index_and_lists
    from reelsim.pipeline.config import Config
    from reelsim.similarity import load_catalog

    fusion = fusion_overrides(args)
    cat, stored_w = load_catalog(Path(args.store) / "index" / "catalog.h5") if (
        Path(args.store) / "index" / "catalog.h5").is_file() else (None, None)
    if cat is None:
        raise StoreError(f"no index in {args.store}: run `reelsim run INPUT --store {args.store}` first")
    fusion.setdefault("weights", stored_w)
    cfg = Config().with_overrides(fusion=fusion)
    summary = index_and_lists(args.store, cfg.fusion, cat_norm=cat, progress=not args.no_progress,
                              text_model=cfg.models.text)
    print(json.dumps(summary))
    return 0


def cmd_shots(args) -> int:
    from reelsim.storage.shards import read_shots

    rec = read_shots(args.store, args.item)
    if args.json:
        print(json.dumps(rec, ensure_ascii=False))
        return 0
    print(f"{rec['item']}: {len(rec['shots'])} shots, {len(rec['scenes'])} scenes, "
          f"{rec['n_frames']} frames at {rec['fps']:.3f} fps")
    scene_of = {i: n for n, sc in enumerate(rec["scenes"]) for i in range(sc["start_shot"], sc["end_shot"])}
    print(f"{'shot':>5} {'scene':>5} {'frames':>15} {'seconds':>17}")
    for i, s in enumerate(rec["shots"]):
        print(f"{i:>5} {scene_of.get(i, '-'):>5} {s['start_frame']:>7}-{s['end_frame']:<7} "
              f"{s['start_s']:>8.2f}-{s['end_s']:<8.2f}")
    return 0


def neighbors_json(item: str, neighbors) -> dict:
    return {"item": item, "neighbors": [
        {"item": n.item, "score": float(n.score), "modalities": {m: float(v) for m, v in n.modalities.items()}}
        for n in neighbors]}


def format_table(item: str, neighbors, meta: dict) -> str:
    mods = ("visual", "audio", "image", "text")
    lines = [f"neighbours of {item!r} ({meta.get(item, {}).get('title') or meta.get(item, {}).get('kind', '')})",
             f"{'#':>3}  {'item':<28} {'title':<34} {'score':>6}  " + " ".join(f"{m:>6}" for m in mods)]
    for rank, n in enumerate(neighbors, 1):
        title = (meta.get(n.item, {}).get("title") or "")[:34]
        cells = " ".join(f"{n.modalities[m]:>6.3f}" if m in n.modalities else f"{'-':>6}" for m in mods)
        lines.append(f"{rank:>3}  {n.item[:28]:<28} {title:<34} {n.score:>6.3f}  {cells}")
    return "\n".join(lines)


def cmd_similar(args) -> int:
    from reelsim.jobs.lists import Lookup
    from reelsim.pipeline.config import parse_weights

    if args.k < 1:
        raise UsageError("-k must be at least 1")
    lookup = Lookup(args.store, parse_weights(args.weights) if args.weights else None)
    neighbors = lookup.neighbors(args.item, args.k)
    print(json.dumps(neighbors_json(args.item, neighbors), ensure_ascii=False) if args.json
          else format_table(args.item, neighbors, lookup.meta))
    return 0


def cmd_export(args) -> int:
    from reelsim.storage.export import export

    n = export(args.store, args.format, args.to)
    print(f"exported {n} {'items' if args.format == 'hdf5' else 'rows'} to {args.to}")
    return 0


def cmd_demo(args) -> int:
    from reelsim.jobs.demo import run_demo

    cfg = config_from_args(args)
    _check_models(cfg)
    return run_demo(args.store, cfg, workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress)


def cmd_models(args) -> int:
    from reelsim.extractors.registry import REGISTRIES, _ensure_builtins_registered

    _ensure_builtins_registered()
    print(f"{'modality':<8} {'name':<24} {'dim':>5}  usable here")
    for modality, table in REGISTRIES.items():
        for name, cls in sorted(table.items()):
            ok, why = cls.usable()
            print(f"{modality:<8} {name:<24} {getattr(cls, 'dim', '?'):>5}  {'yes' if ok else 'no'}: {why}")
    return 0


COMMANDS = {"run": cmd_run, "add": cmd_add, "lists": cmd_lists, "shots": cmd_shots, "similar": cmd_similar, "export": cmd_export,
            "demo": cmd_demo, "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, StoreError, WeightsNotFoundError) as e:
        print(f"reelsim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ReelsimError as e:
        print(f"reelsim {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume (finished items are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
