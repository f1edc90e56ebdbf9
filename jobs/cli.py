"""``reelsim``: a thin command line over the runner, the store and the registries.

Exit codes: 0 success; 2 usage errors (bad flags, unknown item id, missing
store, a model's weights file not found, a malformed interactions file) and store errors (a store in use by
another command, one that cannot be written, a damaged file: the message names it); 3 a batch where some items
failed and the rest completed, an export that left out damaged shards, or ``verify`` finding damage; 4 a search
query refused by the banned-query list; 1 any other error.
Text that comes from the inputs (ids, titles, paths) is printed terminal-safe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from reelsim import __version__
from reelsim.config import LIST_FORMATS, Config, FusionConfig, ModelConfig, ShotConfig, field_help, parse_weights
from reelsim.errors import BannedQueryError, ReelsimError, StoreError, UsageError, WeightsNotFoundError
from reelsim.extractors import detectors, registry
from reelsim.extractors.device import check_amp, resolve_device
from reelsim.extractors.shots import detector_provenance
from reelsim.jobs.api import open_store
from reelsim.jobs.connect import check_scheduler
from reelsim.jobs.demo import run_demo
from reelsim.jobs.graph import dask_lists
from reelsim.jobs.report import write_html_report
from reelsim.jobs.runner import EXIT_PARTIAL, run_catalog
from reelsim.jobs.serve import Service, free_port, run_service, url_of
from reelsim.jobs.tables import matches_text, neighbors_text, terminal_safe
from reelsim.similarity.answer import StoreReader
from reelsim.similarity.copies import copy_marks
from reelsim.similarity.copies import matches as copy_matches
from reelsim.similarity.evaluate import evaluate_store
from reelsim.similarity.evaluate import format_table as evaluation_table
from reelsim.similarity.incremental import check_can_add
from reelsim.similarity.index_choice import check_index_spec
from reelsim.similarity.rebuild import blocklist_changes, content_list_settings, relist, stored_fusion
from reelsim.similarity.spaces import (
    add_to_space,
    check_store_model,
    relist_stale_spaces,
    train_store,
    write_space_lists,
)
from reelsim.similarity.textsearch import search as search_text
from reelsim.similarity.textsearch import search_json
from reelsim.similarity.verify import verify_store
from reelsim.storage.catalog import catalog_size
from reelsim.storage.export import export
from reelsim.storage.layout import StoreLayout
from reelsim.storage.session import WriteSession, writing
from reelsim.storage.shards import read_shots

EXAMPLES = """\
examples:
  reelsim demo --store /tmp/reelsim-demo          # sample catalog, end to end
  reelsim run media/ catalog.jsonl --store out/    # folder of videos + a manifest
  reelsim run catalog.csv --store out/ --workers 4 --device cuda
  reelsim run catalog.jsonl --store out/ --scheduler tcp://10.0.0.5:8786
  reelsim shots trailer-042 --store out/ --json
  reelsim similar trailer-042 --store out/ -k 5
  reelsim matches trailer-042 --store out/ --in    # which catalog items the trailer's shots come from
  reelsim add new-titles.jsonl --store out/        # embed, index and list new items only
  reelsim lists --store out/ --index "IVF4096,Flat" --lists-format parquet,hdf5
  reelsim lists --store out/ --dedup 0.95 --blocklist "lottery" --blocklist-threshold 0.6
  reelsim lists --store /shared/out --scheduler tcp://10.0.0.5:8786   # search blocks on a Dask cluster
  reelsim lists --store out/ --device cuda         # exact kNN graph on a GPU
  reelsim report --store out/ --to report.html --sample 20
  reelsim export --store out/ --format hdf5 --to features.h5
  reelsim verify --store out/                      # is every file whole? what would run/lists redo?
  reelsim models                                   # which models this machine can run
  reelsim train --interactions events.csv --store out/     # EASE/ELSA + tower (docs/learning.md)
  reelsim evaluate --interactions events.csv --store out/  # spaces beside tuned peers on held-out co-engagement
  reelsim lists --store out/ --space blend
  reelsim search "wireless headphones" --store out/ -k 5 --banned banned.txt
  reelsim serve --store out/ --port 8080           # similar/search/items/health over HTTP (JSON)

manifest rows (.jsonl or .csv) have any of: id, video, image, title, description;
relative paths resolve against the manifest's folder.
"""


SERVE_HELP = """\
Answer HTTP requests with the store's answers as JSON; the store's current version
answers each request, so `reelsim add`, `lists` or `train` in another process is picked
up at the next request, without a restart and without a failed request.

endpoints (GET):
  /similar/{id}?k=10&space=content   as `reelsim similar ID --json` (k <= 1000; weights= as --weights)
  /search?q=TEXT&k=10&space=content  as `reelsim search TEXT --json` (--banned applies: 403)
  /items/{id}                        {"id", "kind", "title"}
  /health                            {"version", "items", "spaces", "model", "blocklist"}
The id is percent-encoded as one path segment (an id with '/' is a%2Fb).

errors are JSON {"error": MESSAGE, "exit_code": N}, N as the CLI's exit code:
  404 unknown item or endpoint (2), 400 bad parameter (2), 403 banned query (4),
  503 a store that cannot answer this now: no trained model, a damaged file (2), 500 other (1)

examples:
  reelsim serve --store out/                          # http://127.0.0.1:8080
  curl 'http://127.0.0.1:8080/similar/trailer-042?k=5'
  curl 'http://127.0.0.1:8080/search?q=wireless+headphones&k=3'
  reelsim serve --store out/ --port 9000 --workers 4 --banned banned.txt
"""

#: Shot and scene flags -> the ShotConfig field each sets (help and default: the config's docstring and defaults).
SHOT_FLAGS = {"--cut-min": "cut_min", "--cut-ratio": "cut_ratio", "--gradual-min": "gradual_min",
              "--shot-threshold": "threshold", "--min-shot-frames": "min_shot_frames",
              "--scene-similarity": "scene_similarity", "--scene-window": "scene_window",
              "--scene-audio-db": "scene_audio_db"}


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--scheduler", metavar="ADDR", help="existing Dask scheduler, e.g. tcp://host:8786 "
                   "(default: start a local cluster of worker processes)")
    g.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: cores/2, 1..4)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where models run (default: auto = CUDA when present)")
    g.add_argument("--item-timeout", type=float, metavar="SECONDS",
                   help="an item still running after this long is reported as timed out and its worker "
                   "restarted (default: 3600; 0 = no limit)")
    g.add_argument("--batch-size", type=int, metavar="N", help="clips/images per forward pass (default: 8)")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="video/audio model arithmetic (default: auto = bf16 autocast on CUDA, "
                   "fp16 on GPUs without bf16, fp32 on CPU)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--dashboard-address", metavar="HOST:PORT", help="where a local cluster's Dask dashboard "
                   "listens (default: 127.0.0.1:0, this machine only; it has no authentication: ':8787' opens it "
                   "to the network)")
    m = p.add_argument_group("models (see `reelsim models`)")
    m.add_argument("--video-model", metavar="NAME", choices=registry.names("visual"),
                   help="3D-CNN for shot clips: %(choices)s (default: effnet-lite0-inflated)")
    m.add_argument("--video-weights", metavar="PATH", help="weights file for a Kinetics video model")
    sh = p.add_argument_group("shots and scenes (see docs/shots.md)")
    sh.add_argument("--shot-detector", choices=detectors.names(),
                    help="%(choices)s; reelsim (default): cuts, dissolves, fades, flash-proof; content/adaptive: "
                    "scenedetect's")
    for flag, dest in SHOT_FLAGS.items():
        kind = type(getattr(ShotConfig(), dest))
        sh.add_argument(flag, dest=dest, type=kind, metavar="N" if kind is int else "X",
                        help=field_help(ShotConfig, dest))
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any other setting of the typed config, e.g. --set clips.hop_s=1.5 (repeatable; "
                   f"sections: {', '.join(f.name for f in dataclasses.fields(Config))}; "
                   "e.g. --set jobs.cross_item=on; see reelsim/config.py)")
    m.add_argument("--thumbnail-size", type=int, metavar="PX",
                   help="longest side of the JPEG keyframe/product thumbnails stored for `reelsim report` "
                   "(default: 160; 0: store none)")
    m.add_argument("--audio-model", metavar="NAME", choices=registry.names("audio"),
                   help="audio features: %(choices)s (default: logmel-stats; cnn14-16k = PANNs CNN14 "
                   "embeddings, needs --audio-weights)")
    m.add_argument("--audio-weights", metavar="PATH", help="weights file for a pretrained audio model, "
                   "e.g. Cnn14_16k_mAP=0.438.pth")
    m.add_argument("--re-extract", action="store_true", help="allow a model or weights change against the "
                   "features already in --store: recompute those items (default: refuse, exit 2)")
    s = p.add_argument_group("similarity")
    s.add_argument("--weights", metavar="SPEC", help="modality weights, e.g. visual=1,audio=0.5,image=1,text=1")
    s.add_argument("-k", type=int, metavar="N", help="neighbours per item in the lists (default: 10)")
    s.add_argument("--pca", type=int, metavar="N", help="per-modality PCA to N dimensions, learned on the catalog "
                   "and stored with it (default: off)")
    s.add_argument("--whiten", action="store_true", default=None, help="with --pca: PCA whitening")
    _add_list_options(s)


def _add_list_options(s) -> None:
    """Index, kNN job and list hygiene flags (run, demo, add, lists)."""
    s.add_argument("--index", metavar="SPEC", help="auto (by size: exact below 50k items per modality group, "
                   "else 4-bit fast-scan IVF-PQ whose candidates are re-scored exactly; OPQ+IVF-PQ when even "
                   "those codes exceed --memory-budget), a kind exact|ivf|ivfpqfs|hnsw|ivfpq, or a FAISS "
                   "index_factory string such as 'IVF1024,PQ64x4fs' (default: auto)")
    s.add_argument("--memory-budget", type=float, metavar="GB", help="index codes above this are compressed "
                   "further (OPQ+IVF-PQ) by --index auto (default: 4)")
    s.add_argument("--knn-batch", type=int, metavar="N", help="queries per kNN batch and checkpoint (default: 16384)")
    s.add_argument("--lists-format", metavar="LIST", help="comma-separated: parquet,jsonl,hdf5 "
                   "(default: parquet,jsonl; parquet is always written)")
    s.add_argument("--dedup", type=float, metavar="T", help="collapse near-duplicates: drop a neighbour whose "
                   "fused score with a listed one is >= T, e.g. 0.95 (default: off)")
    s.add_argument("--mmr", type=float, metavar="LAMBDA", help="diversify lists by maximal marginal relevance, "
                   "LAMBDA in [0, 1], 1 = plain ranking (default: off)")
    s.add_argument("--blocklist", action="append", metavar="PHRASE", help="never list items whose text is close "
                   "to PHRASE, in any space or output (repeatable; MiniLM cosine >= --blocklist-threshold). The "
                   "store keeps its blocklist: later lists jobs apply it until another --blocklist or "
                   "--no-blocklist")
    s.add_argument("--no-blocklist", action="store_true", default=None,
                   help="clear the store's blocklist (items it kept out are listed again)")
    s.add_argument("--blocklist-threshold", type=float, metavar="T", help="cosine for --blocklist (default: 0.5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reelsim",
        description="Content-based 'more like this' lists for catalogs of videos and products: "
        "shots and scenes, 3D-CNN / audio / image / text features in HDF5, fused FAISS neighbour lists.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"reelsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for name, help_, description, store_help in (
            ("run", "process a catalog into a store and write neighbour lists",
             "Decode each video once, detect shots and scenes, extract features per shot, "
             "write one HDF5 shard per item, then fuse and write every item's top-k list. "
             "Unchanged items are skipped on a re-run. Writes STORE/report.json. "
             "Exit 0: all items ok; 3: some failed (see report.json), the rest completed.",
             "feature store folder (created)"),
            ("add", "analyse new items and add them to an existing store's index and lists",
             "Embed the new items (like `run`), normalise them with the catalog's stored "
             "transform, add them to the FAISS index, compute their lists and update only the lists "
             "they enter; nothing is rebuilt. Items already in the catalog are skipped. "
             "Exit 0: all items ok; 3: some failed, the rest were added.",
             "store made by `reelsim run`")):
        p = sub.add_parser(name, help=help_, description=description, epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="folder of media, .jsonl/.csv manifest, or video file")
        p.add_argument("--store", required=True, type=Path, metavar="DIR", help=store_help)
        _add_run_options(p)
        if name == "add":
            _add_space_option(p, "also update this space's lists (learned/blend: the new items get learned vectors "
                              "from their content at once)")

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
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the kNN search runs (default: auto = "
                   "a CUDA GPU when present: exact search there; else FAISS on the CPU)")
    p.add_argument("--scheduler", metavar="ADDR", help="run the search phase as a Dask job on this scheduler, "
                   "blocks of --knn-batch rows per task (the store must be on a filesystem the workers see)")
    p.add_argument("--workers", type=int, metavar="N", help="run the search phase as a Dask job on a local "
                   "cluster of N worker processes (default: in this process, with FAISS's threads)")
    _add_list_options(p.add_argument_group("index and lists"))
    _add_space_option(p, "content: the fused index and lists (default); learned/blend: exact lists in that space, "
                      "written to STORE/lists/<space>/ (needs `reelsim train`)")

    p = sub.add_parser("shots", help="shots and scenes of one video item")
    p.add_argument("item", metavar="ITEM")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")

    p = sub.add_parser("similar", help="an item's nearest neighbours",
                       description="An item's nearest neighbours as a table: rank, id, title (the catalog title,\n"
                       "else the file name), kind, fused score and the cosine of each modality (blank where\n"
                       "the two items do not share it). --json prints the same for scripts.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("item", metavar="ITEM")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("-k", type=int, default=10, metavar="N", help="number of neighbours (default: 10)")
    p.add_argument("--weights", metavar="SPEC", help="re-weight modalities for this query, e.g. text=0")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    _add_space_option(p, "score by content fusion (default), the learned tower, or the ELSA/tower blend")

    p = sub.add_parser("matches", help="where an item's shots are copied, and what it copies, with time spans",
                       description="Copies of ITEM's footage in other items of the store, and the footage ITEM\n"
                       "shows from them, found shot by shot (also inside a picture-in-picture, a split-screen\n"
                       "panel, letterboxed, re-framed, mirrored, cropped, sped up or cut into a montage).\n"
                       "Each row: the other item, the relation (copies: ITEM shows the other's footage;\n"
                       "copied-by: the other shows ITEM's; duplicate: each shows all of the other), the\n"
                       "aligned spans in both (seconds), a score (mean cosine of the matched shots), the\n"
                       "shots matched and the kind of edit it looks like. Found by `reelsim run` / `lists`\n"
                       "/ `add` (STORE/index/copies/); docs/copies.md.",
                       epilog="examples:\n  reelsim matches trailer-042 --store out/\n"
                       "  reelsim matches trailer-042 --store out/ --in      # which films the trailer comes from\n"
                       "  reelsim matches film-007 --store out/ --out --json # where the film's shots are used",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("item", metavar="ITEM")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--in", dest="direction", action="store_const", const="in",
                   help="only where ITEM comes from: the items whose footage it shows (a clip's or trailer's sources)")
    g.add_argument("--out", dest="direction", action="store_const", const="out",
                   help="only the items that show ITEM's footage (re-uploads, compilations, insets)")
    p.set_defaults(direction="both")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")

    p = sub.add_parser("report", help="a static HTML page of items, their shots or images, and their neighbours",
                       description="Write one self-contained HTML page (pictures embedded) showing, for a sample\n"
                       "of items, each item's shot strip (a keyframe per shot, with times) or product image,\n"
                       "and its top-k neighbours with their pictures, fused score and per-modality cosines.\n"
                       "Open it in any browser; it needs no network and no JavaScript. Pictures are the\n"
                       "thumbnails `reelsim run` stores in each shard (see --thumbnail-size).",
                       epilog="examples:\n  reelsim report --store out/ --to report.html\n"
                       "  reelsim report --store out/ --to r.html --sample 50 --seed 7 -k 10\n"
                       "  reelsim report --store out/ --to r.html --items trailer-042,sku-991",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, type=Path, metavar="DIR", help="a store written by `reelsim run`")
    p.add_argument("--to", required=True, type=Path, metavar="PATH", help="HTML file to write")
    p.add_argument("--sample", type=int, default=12, metavar="N", help="items drawn at random (default: 12)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of the sample (default: 0)")
    p.add_argument("--items", metavar="ID,ID", help="show these items instead of a sample")
    p.add_argument("-k", type=int, default=5, metavar="N", help="neighbours per item (default: 5)")
    p.add_argument("--weights", metavar="SPEC", help="re-weight modalities, e.g. text=0")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_space_option(p, "whose neighbours the page shows (default: content; the space's lists, as `similar`)")

    p = sub.add_parser("export", help="write features (hdf5) or lists (parquet, jsonl) to one file")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("--format", required=True, choices=("hdf5", "parquet", "jsonl"))
    p.add_argument("--to", required=True, type=Path, metavar="PATH")
    _add_space_option(p, "which space's lists parquet/jsonl export (default: content)")

    p = sub.add_parser("verify", help="check every file of a store and their consistency",
                       description="Read every shard, the catalog, items.json, the FAISS indexes, the version, "
                       "the list sets, the list files of every space and the trained model the way the commands "
                       "read them, and check them against each other. Names each damaged or inconsistent file and "
                       "the command that redoes it: `reelsim run` (items, catalog), `reelsim lists` (index, "
                       "content lists), `reelsim lists --space S` (a learned space's lists), `reelsim train` (the "
                       "model), `reelsim verify --repair` (a commit a killed command left unfinished). Changes "
                       "nothing, unless --repair. Exit 0: clean; 3: damaged; 2: not a store.")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.add_argument("--repair", action="store_true", help="first finish a commit that a killed command left and "
                   "remove the temporary files killed commands left (takes the store's lock), then check")

    p = sub.add_parser("demo", help="generate a sample catalog with ffmpeg and run everything on it")
    p.add_argument("--store", type=Path, default=Path("reelsim-demo"), metavar="DIR",
                   help="where sample media and results go (default: ./reelsim-demo)")
    _add_run_options(p)

    p = sub.add_parser("models", help="list registered models and whether this machine can run them")
    p.add_argument("--check-amp", action="store_true", help="also compare the default video model's mixed-"
                   "precision features with fp32 on a random batch (cosine >= 0.999 passes; bf16 on CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device for --check-amp")
    _add_learn_parsers(sub)
    return parser


def _add_space_option(p, text: str) -> None:
    p.add_argument("--space", choices=("content", "learned", "blend"), default="content", help=text)


def _add_log_options(p, json_help: str) -> None:
    """--interactions, --store, --set and --json of ``train`` and ``evaluate``."""
    p.add_argument("--interactions", required=True, type=Path, metavar="FILE")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="learn.SETTING=VALUE",
                   help="learn.SETTING=VALUE, e.g. --set learn.tower_epochs=8 --set learn.loss=in-batch "
                   "(repeatable; see LearnConfig in docs/learning.md)")
    p.add_argument("--json", action="store_true", help=json_help)


def _add_learn_parsers(sub) -> None:
    """``train``, ``evaluate`` and ``search`` (docs/learning.md)."""
    for name, help_, description, json_help in (
            ("train", "learn from interactions: EASE or ELSA for warm items, a content tower for all, every "
             "setting chosen on a validation split",
             "Read an interactions file (.csv, .jsonl or .parquet: user, item, and optional weight, timestamp, "
             "event). Hold out a validation split (each user's last rows, and some warm items with all their "
             "rows) and choose there, with no setting to tune by hand: EASE's lambda (or ELSA's rank and epochs "
             "above learn.ease_max_items warm items), the content tower's epochs (early stopping), the content "
             "mix, the popularity prior and the score rules of the learned and blend spaces, with a fair share of "
             "list slots for items without users. Save the model, the choices and provenance in STORE/learned/. "
             "Rows of items not in the store are counted and skipped. Degenerate training (a NaN or 0 loss, "
             "collapsed vectors) is refused with exit code 1 and the stored model is kept.",
             "print the summary as JSON (with the chosen settings and their validation recall@10)"),
            ("evaluate", "learned spaces beside tuned peers on held-out co-engagement (nothing is saved)",
             "Hold out a share of the items (with all their rows) as cold and the last rows of each user, train "
             "on the rest exactly as `train` does, and score each space's top 10 against held-out co-engagement: "
             "content, learned and blend beside popularity, EASE (or ALS), and a ridge map from content for cold "
             "items, every peer tuned on train's validation split. Reports recall@10, NDCG@10, precision@10 of the "
             "same category (when index/items.json gives items a category), coverage and the share of list slots "
             "held by cold items.", "print the result as JSON")):
        p = sub.add_parser(name, help=help_, description=description)
        _add_log_options(p, json_help)
    p.add_argument("--cold-fraction", type=float, metavar="F", help="share of items held out as cold (default 0.2)")
    p = sub.add_parser("search", help="rank items for a text query (with a banned-query list)",
                       description="Embed QUERY with the text model and rank items by cosine with their text "
                       "embeddings (--space learned: through the trained content tower). With --banned FILE (UTF-8, "
                       "one phrase a line), a query whose text similarity to a phrase is >= --banned-threshold, or "
                       "that contains a phrase as whole tokens, is refused with exit code 4; both are compared "
                       "after Unicode NFKC and look-alike folding (full-width or Cyrillic letters count as the "
                       "Latin ones; docs/learning.md).")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--store", required=True, type=Path, metavar="DIR")
    p.add_argument("-k", type=int, default=10, metavar="N", help="results (default: 10)")
    p.add_argument("--space", choices=("content", "learned"), default="content",
                   help="text cosine (default) or the learned space")
    p.add_argument("--banned", type=Path, metavar="FILE", help="banned phrases, one a line")
    p.add_argument("--banned-threshold", type=float, default=0.6, metavar="T",
                   help="MiniLM cosine at which a query matches a banned phrase (default: 0.6)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p = sub.add_parser("serve", help="answer similar, search, items and health over HTTP (JSON)",
                       description=SERVE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, type=Path, metavar="DIR", help="the store to serve")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the "
                   "network, without authentication)")
    p.add_argument("--port", type=int, default=8080, metavar="N", help="port (default: 8080; 0: a free one, printed)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="worker processes, each answering on its own; they share the memory-mapped lists "
                   "(default: 2)")
    p.add_argument("--banned", type=Path, metavar="FILE",
                   help="banned phrases for /search, one a line (a matching query answers 403)")
    p.add_argument("--banned-threshold", type=float, default=0.6, metavar="T",
                   help="MiniLM cosine at which a query matches a banned phrase (default: 0.6)")
    p.add_argument("--access-log", action="store_true", help="log every request (granian's access log)")


def fusion_overrides(args: argparse.Namespace) -> dict:
    """FusionConfig overrides from the similarity flags (None = not given; values are checked by the config)."""
    get = lambda name: getattr(args, name, None)
    fusion = {"k": get("k"), "pca_dim": get("pca"), "whiten": get("whiten"), "index": get("index"),
              "memory_budget_gb": get("memory_budget"), "knn_batch": get("knn_batch"), "dedup": get("dedup"),
              "mmr": get("mmr"), "blocklist_threshold": get("blocklist_threshold"), "device": get("device")}
    if get("weights"):
        fusion["weights"] = parse_weights(args.weights)
    if get("blocklist") and get("no_blocklist"):
        raise UsageError("--blocklist and --no-blocklist contradict each other: give one")
    if get("blocklist"):
        fusion["blocklist"] = tuple(p.strip() for p in args.blocklist if p.strip())
    elif get("no_blocklist"):
        fusion["blocklist"] = ()
    if get("lists_format"):
        formats = tuple(f.strip() for f in args.lists_format.split(",") if f.strip())
        if not formats or not set(formats) <= set(LIST_FORMATS):
            raise UsageError(f"--lists-format: expected some of {', '.join(LIST_FORMATS)}, got {args.lists_format!r}")
        fusion["lists_formats"] = formats
    return fusion


def config_from_args(args: argparse.Namespace) -> Config:
    """The run's :class:`Config` from the flags and ``--set``; every value is checked as it is built."""
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    return Config().with_overrides(
        models={"device": args.device, "batch_size": args.batch_size, "visual": args.video_model,
                "video_weights": str(Path(args.video_weights).resolve()) if args.video_weights else None,
                "audio": args.audio_model, "precision": args.precision,
                "audio_weights": str(Path(args.audio_weights).resolve()) if args.audio_weights else None},
        shots={"detector": args.shot_detector, **{dest: getattr(args, dest) for dest in SHOT_FLAGS.values()}},
        fusion=fusion_overrides(args),
        thumbnails={"max_side": args.thumbnail_size},
        jobs={"item_timeout_s": args.item_timeout, "dashboard_address": args.dashboard_address},
    ).with_settings(args.settings)


def check_runnable(cfg: Config) -> None:
    """Fail fast, before starting a cluster: the device, the detector and every model must exist here.

    Raises UsageError (unknown name, no CUDA) or WeightsNotFoundError (a weights file that is not here).
    """
    resolve_device(cfg.models.device)
    check_index_spec(cfg.fusion.index)
    if cfg.shots.detector not in detectors.names():
        raise UsageError(f"unknown shot detector {cfg.shots.detector!r}; available: {', '.join(detectors.names())}")
    detector_provenance(cfg.shots)  # a model-based detector whose package or weights are missing says so here
    paths = {"visual": cfg.models.video_weights, "audio": cfg.models.audio_weights}
    for modality in ("visual", "audio", "image", "text"):
        registry.get_class(modality, getattr(cfg.models, modality)).weights_file_for(paths.get(modality))


def _run_catalog(args, lists: str, then=relist_stale_spaces) -> int:
    """``run`` (lists="rebuild") and ``add`` (lists="add": the store must have an index).

    ``then(store)``: what updates the learned spaces' lists after the content lists are
    published (default: rewrite those another blocklist made).
    """
    cfg = config_from_args(args)
    if lists == "add":
        check_can_add(args.store)
    check_runnable(cfg)
    check_scheduler(args.scheduler)
    try:
        report = run_catalog(args.inputs, args.store, cfg, scheduler=args.scheduler, workers=args.workers,
                             progress=not args.no_progress, re_extract=args.re_extract, lists=lists, then=then)
    except ReelsimError as e:  # the lists stage failed: the items' summary first, then the error
        if getattr(e, "report", None) is not None:
            print(e.report.describe(args.store))
        raise
    print(report.describe(args.store))
    return report.exit_code


def cmd_run(args) -> int:
    return _run_catalog(args, "rebuild")


def cmd_add(args) -> int:
    if args.space == "content":
        return _run_catalog(args, "add")
    check_space_flags(args, "add")
    check_store_model(args.store)  # before any item is analysed
    fusion = config_from_args(args).fusion
    return _run_catalog(args, "add", then=lambda store: {args.space: add_to_space(store, args.space, fusion)})


#: flags of `lists`/`add` that a learned space cannot apply -> why
SPACE_REFUSED = {
    "weights": "--weights applies to the content space only: the {space} space scores items with the trained "
               "model over all their modalities",
    "index": "--index applies to the content space only: {space} lists are exact",
    "memory_budget": "--memory-budget applies to the content index only: {space} lists are exact",
    "knn_batch": "--knn-batch applies to the content kNN job only",
    "workers": "--workers applies to the content kNN job only: {space} lists are computed in this process",
    "scheduler": "--scheduler applies to the content kNN job only: {space} lists are computed in this process",
    "pca": "--pca applies to the content catalog only",
}


def check_space_flags(args, command: str) -> None:
    """Refuse (exit 2, saying why) a flag given with --space learned|blend that cannot apply to that space."""
    for name, why in SPACE_REFUSED.items():
        if getattr(args, name, None) not in (None, False):
            raise UsageError(f"{command} --space {args.space}: {why.format(space=args.space)}")


def fit_k(args) -> int | None:
    """Lower ``args.k`` to the store's other items (N - 1, at least 1) when it is larger, with a note on stderr;
    the -k asked for when it was lowered, else None. A k beyond the catalog lists nothing more (and allocates
    nothing more: the searches cap it too). A k up to the default (10) is capped without a note."""
    if args.k is None or args.k <= FusionConfig.k:
        return None
    n = catalog_size(StoreLayout(args.store).require_catalog())
    if args.k <= max(1, n - 1):
        return None
    asked, args.k = args.k, max(1, n - 1)
    print(f"reelsim {args.command}: -k {asked} is more than the {n - 1} other items of the catalog; "
          f"using -k {args.k}", file=sys.stderr)
    return asked


def cmd_lists(args) -> int:
    asked = fit_k(args)
    said = {"k_requested": asked} if asked is not None else {}
    if args.space != "content":
        check_space_flags(args, "lists")
        fusion = Config().with_overrides(fusion=fusion_overrides(args)).fusion
        with writing(StoreLayout(args.store).root, f"lists --space {args.space}"):
            content = None
            if fusion.blocklist is not None and blocklist_changes(args.store, fusion):
                # the blocklist is the store's: every space's lists apply it, the content lists first
                content = relist(args.store, {**content_list_settings(args.store), "blocklist": fusion.blocklist,
                                              "blocklist_threshold": fusion.blocklist_threshold},
                                 progress=not args.no_progress, text_model=ModelConfig.text)
            summary = write_space_lists(args.store, args.space, fusion, device=_space_device(args))
            others = relist_stale_spaces(args.store)
        summary.update({"content": content} if content else {}, **({"spaces": others} if others else {}), **said)
        print(json.dumps(summary))
        return 0
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.scheduler or args.workers:
        with writing(StoreLayout(args.store).root, "lists"):
            summary = dask_lists(args.store, stored_fusion(args.store, fusion_overrides(args)),
                                 scheduler=args.scheduler, workers=args.workers, progress=not args.no_progress,
                                 text_model=ModelConfig.text)
            summary["spaces"] = relist_stale_spaces(args.store)
    else:
        with writing(StoreLayout(args.store).root, "lists"):
            summary = relist(args.store, fusion_overrides(args), progress=not args.no_progress,
                             text_model=ModelConfig.text)
            summary["spaces"] = relist_stale_spaces(args.store)
    if not summary["spaces"]:
        del summary["spaces"]
    print(json.dumps(summary | said))
    return 0


def _space_device(args) -> str:
    """Where a learned space's lists are computed: ``--device`` (auto: CUDA when present)."""
    return str(resolve_device(args.device or "auto"))


def cmd_shots(args) -> int:
    rec = read_shots(args.store, args.item)
    if args.json:
        print(json.dumps(rec, ensure_ascii=False))
        return 0
    print(f"{terminal_safe(rec['item'])}: {len(rec['shots'])} shots, {len(rec['scenes'])} scenes, "
          f"{rec['n_frames']} frames at {rec['fps']:.3f} fps")
    scene_of = {i: n for n, sc in enumerate(rec["scenes"]) for i in range(sc["start_shot"], sc["end_shot"])}
    print(f"{'shot':>5} {'scene':>5} {'frames':>15} {'seconds':>17}  entered by")
    for i, s in enumerate(rec["shots"]):
        a, b = s["transition_frames"]
        how = s["transition"] if a == b else f"{s['transition']} (frames {a}-{b})"
        print(f"{i:>5} {scene_of.get(i, '-'):>5} {s['start_frame']:>7}-{s['end_frame']:<7} "
              f"{s['start_s']:>8.2f}-{s['end_s']:<8.2f}  {how}")
    return 0


def cmd_similar(args) -> int:
    if args.k < 1:
        raise UsageError("-k must be at least 1")
    fit_k(args)
    answer = StoreReader(args.store).similar(args.item, args.k, space=args.space,
                                             weights=parse_weights(args.weights) if args.weights else None)
    copies = copy_marks(args.store, args.item, [n.item for n in answer.neighbors])
    if args.json:
        print(json.dumps(answer.to_json(copies), ensure_ascii=False))
    else:
        print(neighbors_text(args.store, args.item, answer.neighbors, space=args.space, copies=copies))
    return 0


def cmd_matches(args) -> int:
    found = copy_matches(args.store, args.item, direction=args.direction)
    if args.json:
        print(json.dumps({"item": args.item, "direction": args.direction, "matches": [m.to_json() for m in found]},
                         ensure_ascii=False))
        return 0
    print(matches_text(args.store, args.item, found))
    return 0


def cmd_report(args) -> int:
    items = [i.strip() for i in args.items.split(",") if i.strip()] if args.items else None
    got = write_html_report(args.store, args.to, sample=args.sample, seed=args.seed, items=items, k=args.k,
                       weights=parse_weights(args.weights) if args.weights else None, progress=not args.no_progress,
                       space=args.space)
    print(f"wrote {args.to}: {got['items']} items, {got['neighbours']} neighbours, {got['images']} pictures, "
          f"{got['bytes'] / 1e6:.2f} MB")
    return 0


def cmd_export(args) -> int:
    if args.format == "hdf5" and args.space != "content":
        raise UsageError("--space applies to list exports (parquet, jsonl); hdf5 exports the items' features")
    n, skipped = export(args.store, args.format, args.to, args.space)
    print(f"exported {n} {'items' if args.format == 'hdf5' else 'rows'} to {args.to}")
    for why in skipped:
        print(f"reelsim export: left out: {terminal_safe(why)}", file=sys.stderr)
    return EXIT_PARTIAL if skipped else 0


def cmd_verify(args) -> int:
    if args.repair:
        StoreLayout(args.store).check_root()
        if not StoreLayout(args.store).root.is_dir():
            raise StoreError(f"no store at {args.store}")
        with WriteSession(args.store, "verify --repair"):
            pass  # opening a session finishes an interrupted commit and removes leftovers
    verdict = verify_store(args.store)
    if args.json:
        print(json.dumps(verdict.to_json(), ensure_ascii=False))
    else:
        print("\n".join(terminal_safe(line) for line in verdict.describe()))
    return 0 if verdict.ok else EXIT_PARTIAL


def cmd_demo(args) -> int:
    cfg = config_from_args(args)
    check_runnable(cfg)
    check_scheduler(args.scheduler)
    return run_demo(args.store, cfg, workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress,
                    re_extract=args.re_extract)


def cmd_models(args) -> int:
    print(f"{'modality':<8} {'name':<24} {'dim':>5}  usable here")
    for modality, table in registry.REGISTRIES.items():
        for name, cls in sorted(table.items()):
            ok, why = cls.usable()
            print(f"{modality:<8} {name:<24} {getattr(cls, 'dim', '?'):>5}  {'yes' if ok else 'no'}: {why}")
    if args.check_amp:
        import numpy as np

        model = registry.load("visual", ModelConfig.visual, device=args.device, batch_size=4)
        clips = np.random.default_rng(0).integers(0, 256, (4, model.clip_len, 160, 160, 3), dtype=np.uint8)
        print(f"AMP check, {model.name}: {check_amp(model, clips).describe()}")
    return 0


def _learn_config(args):
    cfg = Config().with_settings(args.settings)
    if getattr(args, "cold_fraction", None) is not None:
        cfg = cfg.with_overrides(learn={"cold_fraction": args.cold_fraction})
    return cfg.learn


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def cmd_train(args) -> int:
    summary = train_store(args.store, args.interactions, _learn_config(args), progress=_say)
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def cmd_evaluate(args) -> int:
    result = evaluate_store(args.store, args.interactions, _learn_config(args), progress=_say)
    print(json.dumps(result) if args.json else evaluation_table(result))
    return 0


def cmd_search(args) -> int:
    hits = search_text(args.store, args.query, args.k, space=args.space, banned=args.banned,
                  threshold=args.banned_threshold)
    if args.json:
        print(json.dumps(search_json(args.query, args.space, hits), ensure_ascii=False))
    else:
        for rank, h in enumerate(hits, start=1):
            print(f"{rank:>3} {h.score:>7.3f}  {terminal_safe(h.item)}  {terminal_safe(h.title)}")
    return 0


def cmd_serve(args) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.port < 0 or args.port > 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    health = open_store(args.store).health()  # not a store, or a damaged version file: exit 2 before listening
    Service(args.store, banned=args.banned)  # a banned file that cannot be read: exit 2 here too
    port = free_port(args.host, args.port)
    items = f", {health['items']} items" if health.get("items") is not None else ""
    print(f"reelsim serve: {terminal_safe(args.store)} (version {health['version']}{items}) on "
          f"{url_of(args.host, port)} with {args.workers} worker{'s' * (args.workers > 1)}; Ctrl-C stops", flush=True)
    run_service(args.store, host=args.host, port=port, workers=args.workers, banned=args.banned,
                banned_threshold=args.banned_threshold, access_log=args.access_log)
    return 0


COMMANDS = {"run": cmd_run, "add": cmd_add, "lists": cmd_lists, "shots": cmd_shots, "similar": cmd_similar,
            "matches": cmd_matches, "report": cmd_report, "export": cmd_export, "verify": cmd_verify, "demo": cmd_demo,
            "models": cmd_models, "train": cmd_train, "evaluate": cmd_evaluate, "search": cmd_search,
            "serve": cmd_serve}


def quiet_openmp() -> None:
    """Make OpenMP threads (FAISS, torch) sleep while they wait instead of spinning, unless the user chose.

    Set before FAISS or torch is first imported (they read it once). On a
    machine shared with other jobs, spinning threads made FAISS's training
    of an ``IVF256,PQ64x4fs`` index 4-50 times slower than sleeping ones
    (0.5 s against 2-26 s at 10^5 vectors; docs/similarity.md). Local Dask
    workers inherit it.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    quiet_openmp()
    for stream in (sys.stdout, sys.stderr):  # a path's bytes that are not UTF-8 print as \udcff (a JSON escape too)
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "store", None) is not None:
            StoreLayout(args.store).check_root()
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that has gone shows here, not as an error at exit
        return code
    except BannedQueryError as e:
        print(f"reelsim {args.command}: {terminal_safe(e)}", file=sys.stderr)
        return 4
    except (UsageError, StoreError, WeightsNotFoundError) as e:
        print(f"reelsim {args.command}: error: {terminal_safe(e)}", file=sys.stderr)
        return 2
    except ReelsimError as e:
        print(f"reelsim {args.command}: error: {terminal_safe(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume (finished items are kept)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `reelsim shots X | head`: the reader has gone, that is all
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
