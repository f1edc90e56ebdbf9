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
import re
import sys
from pathlib import Path

from reelsim._version import __version__
from reelsim.config import (
    DEVICES,
    LIST_FORMATS,
    Config,
    FusionConfig,
    config_flags,
    field_help,
    parse_weights,
    read_config_file,
    section_class,
)
from reelsim.errors import BannedQueryError, ReelsimError, StoreError, UsageError, WeightsNotFoundError
from reelsim.extractors import detectors, registry
from reelsim.extractors.device import check_amp, resolve_device
from reelsim.extractors.shots import detector_provenance
from reelsim.jobs.api import open_store
from reelsim.jobs.connect import check_scheduler
from reelsim.jobs.console import TerminalProgress, log_warnings_to_stderr
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
from reelsim.storage.provenance import recorded_models
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

#: argparse group of each config section's flags, per kind of command
GROUPS = {"jobs": "execution", "models": "models (see `reelsim models`)", "thumbnails": "models (see `reelsim models`)",
          "shots": "shots and scenes (see docs/shots.md)", "fusion": "similarity"}


def device_arg(text: str) -> str:
    """``--device``'s value: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (what the config accepts)."""
    if text in DEVICES or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"invalid device {text!r} (choose from {', '.join(DEVICES)}, cuda:N)")


def registry_names(kind: str) -> list[str]:
    """The names a registered-name flag accepts: a modality's models, or the shot detectors."""
    return detectors.names() if kind == "detector" else registry.names(kind)


def add_config_flags(p: argparse.ArgumentParser, command: str, groups: dict | None = None) -> None:
    """Add ``command``'s flags from the config table (:func:`reelsim.config.config_flags`).

    Each flag's help is its field's description and default (:func:`~reelsim.config.field_help`),
    its type the default's type, its choices the field's (or its registry's names); ``groups`` maps
    a config section to the argparse group its flags go in (default: the parser).
    """
    seen = set()
    for section, name, fl in config_flags(command):
        if fl.option in seen:  # --device sets models.device and fusion.device on run
            continue
        seen.add(fl.option)
        cls = section_class(section)
        field_ = next(f for f in dataclasses.fields(cls) if f.name == name)
        default = field_.default if field_.default is not dataclasses.MISSING else field_.default_factory()
        kw: dict = {"dest": fl.attr, "help": field_help(cls, name).replace("%", "%%")}
        if fl.parse == "switch":
            kw.update(action="store_true", default=None)
        else:
            kw["metavar"] = fl.metavar
            if fl.registry:
                kw["choices"] = registry_names(fl.registry)
                kw["help"] += "; one of: %(choices)s"
            elif fl.choices and "cuda:N" in fl.choices:
                kw["type"] = device_arg
            elif fl.choices:
                kw["choices"] = fl.choices
            elif fl.parse is None and default is not None:
                kw["type"] = type(default)
            elif fl.parse is None:  # an optional number: its annotation says which
                kw["type"] = float if "float" in str(field_.type) else int
        (groups or {}).get(section, p).add_argument(fl.option, **kw)


def _add_config_file_option(p) -> None:
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="settings from a TOML file (one table per "
                   "section, e.g. [models] device = \"cuda:1\"; `reelsim config` prints one); flags and --set "
                   "override it. On an existing store, the store's models are the defaults")


def _add_run_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--scheduler", metavar="ADDR", help="existing Dask scheduler, e.g. tcp://host:8786 "
                   "(default: start a local cluster of worker processes)")
    g.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: cores/2, 1..4)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = p.add_argument_group(GROUPS["models"])
    m.add_argument("--re-extract", action="store_true", help="allow a model or weights change against the "
                   "features already in --store: recompute those items (default: refuse, exit 2)")
    groups = {section: p.add_argument_group(title) for section, title in GROUPS.items() if title != GROUPS["models"]}
    groups.update(models=m, thumbnails=m, jobs=g)
    add_config_flags(p, command, groups)
    _add_blocklist_options(groups["fusion"])
    _add_config_file_option(p)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any other setting of the typed config, e.g. --set clips.hop_s=1.5 (repeatable; "
                   f"sections: {', '.join(f.name for f in dataclasses.fields(Config))}; "
                   "e.g. --set jobs.cross_item=on; see reelsim/config.py)")


def _add_blocklist_options(s) -> None:
    """The blocklist flags (run, demo, add, lists): the store's list of phrases kept out of every list."""
    s.add_argument("--blocklist", action="append", metavar="PHRASE", help="never list items whose text is close "
                   "to PHRASE, in any space or output (repeatable; MiniLM cosine >= --blocklist-threshold). The "
                   "store keeps its blocklist: later lists jobs apply it until another --blocklist or "
                   "--no-blocklist")
    s.add_argument("--no-blocklist", action="store_true", default=None,
                   help="clear the store's blocklist (items it kept out are listed again)")


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
        _add_run_options(p, name)
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--scheduler", metavar="ADDR", help="run the search phase as a Dask job on this scheduler, "
                   "blocks of --knn-batch rows per task (the store must be on a filesystem the workers see)")
    p.add_argument("--workers", type=int, metavar="N", help="run the search phase as a Dask job on a local "
                   "cluster of N worker processes (default: in this process, with FAISS's threads)")
    index = p.add_argument_group("index and lists (defaults: the settings the store's lists were made with)")
    add_config_flags(p, "lists", {"fusion": index})
    _add_blocklist_options(index)
    _add_config_file_option(p)
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
    _add_run_options(p, "demo")

    p = sub.add_parser("models", help="list registered models and whether this machine can run them")
    p.add_argument("--check-amp", action="store_true", help="also compare the default video model's mixed-"
                   "precision features with fp32 on a random batch (cosine >= 0.999 passes; bf16 on CPU)")
    p.add_argument("--device", type=device_arg, default="auto", metavar="DEVICE",
                   help="device for --check-amp: auto, cpu, cuda or cuda:N (default: auto)")
    _add_learn_parsers(sub)

    p = sub.add_parser("config", help="print the effective configuration (TOML, a --config file)",
                       description="Print every setting of every section as the commands would use it: the "
                       "defaults, then the models of --store (a command on an existing store uses the models its "
                       "features came from), then --config FILE, then --set. The output is a TOML file that "
                       "--config reads back. --defaults prints the defaults alone.",
                       epilog="examples:\n  reelsim config --defaults > reelsim.toml   # edit, then:\n"
                       "  reelsim run media/ --store out/ --config reelsim.toml\n"
                       "  reelsim config --store out/ --set fusion.k=20 --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--defaults", action="store_true", help="the defaults only (no store, file or --set)")
    p.add_argument("--store", type=Path, metavar="DIR", help="a store: its models are the defaults")
    _add_config_file_option(p)
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="a setting, as on run (repeatable)")
    p.add_argument("--json", action="store_true", help="JSON instead of TOML")
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
    _add_config_file_option(p)
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


def flag_values(args: argparse.Namespace, command: str) -> dict[str, dict]:
    """``{section: {field: value}}`` of the config flags given on ``command``'s line (read from the config table;
    a flag not given is left out; values are checked when the config is built)."""
    out: dict[str, dict] = {}
    for section, name, fl in config_flags(command):
        value = getattr(args, fl.attr, None)
        if value is None:
            continue
        if fl.parse == "path":
            value = str(Path(value).resolve())
        elif fl.parse == "weights":
            value = parse_weights(value)
        elif fl.parse == "formats":
            value = tuple(f.strip() for f in value.split(",") if f.strip())
            if not value or not set(value) <= set(LIST_FORMATS):
                raise UsageError(f"--lists-format: expected some of {', '.join(LIST_FORMATS)}, "
                                 f"got {getattr(args, fl.attr)!r}")
        out.setdefault(section, {})[name] = value
    return out


def blocklist_override(args: argparse.Namespace) -> dict:
    """``{"blocklist": phrases}`` from ``--blocklist`` (``()`` from ``--no-blocklist``), or ``{}``."""
    given, clear = getattr(args, "blocklist", None), getattr(args, "no_blocklist", None)
    if given and clear:
        raise UsageError("--blocklist and --no-blocklist contradict each other: give one")
    if given:
        return {"blocklist": tuple(p.strip() for p in given if p.strip())}
    return {"blocklist": ()} if clear else {}


def file_settings(args: argparse.Namespace, section: str) -> dict:
    """The ``section`` fields that the ``--config`` file sets, with their checked values (``{}`` without a file)."""
    path = getattr(args, "config", None)
    if path is None:
        return {}
    named = read_config_file(path).get(section) or {}
    current = getattr(Config().with_file(path), section)
    return {name: getattr(current, name) for name in named}


def fusion_overrides(args: argparse.Namespace, command: str = "lists") -> dict:
    """FusionConfig overrides of a lists job: the ``--config`` file's fusion settings, then the flags.

    Settings given neither way are left out, so the store's own (its catalog's weights) stay.
    """
    return {**file_settings(args, "fusion"), **flag_values(args, command).get("fusion", {}),
            **blocklist_override(args)}


def store_models(store: Path | None) -> dict[str, str]:
    """modality -> the model name the store's features came from (the defaults of a command on that store)."""
    if store is None or not StoreLayout(store).shards_dir.is_dir():
        return {}
    return {m: stamp.model for m, stamp in recorded_models(store).items()}


def base_config(args: argparse.Namespace) -> Config:
    """The defaults of a command: the config's, with the models of ``--store`` (when it has features), then the
    ``--config`` file. Flags and ``--set`` go on top (:func:`config_from_args`)."""
    cfg = Config().with_overrides(models=store_models(getattr(args, "store", None)))
    path = getattr(args, "config", None)
    return cfg.with_file(path) if path is not None else cfg


def config_from_args(args: argparse.Namespace, command: str | None = None) -> Config:
    """The command's :class:`Config`: defaults (:func:`base_config`), then the flags, then ``--set``.

    Every value is checked as it is built.
    """
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    flags = flag_values(args, command or args.command)
    flags["fusion"] = {**flags.get("fusion", {}), **blocklist_override(args)}
    return base_config(args).with_overrides(**flags).with_settings(getattr(args, "settings", None) or [])


def check_runnable(cfg: Config, store: Path | None = None) -> None:
    """Fail fast, before starting a cluster: the device, the detector and every model must exist here.

    Raises UsageError (unknown name, no CUDA) or WeightsNotFoundError (a weights file that is not here; for a
    model that is the default because ``store``'s features came from it, the message says so).
    """
    resolve_device(cfg.models.device)
    check_index_spec(cfg.fusion.index)
    if cfg.shots.detector not in detectors.names():
        raise UsageError(f"unknown shot detector {cfg.shots.detector!r}; available: {', '.join(detectors.names())}")
    detector_provenance(cfg.shots)  # a model-based detector whose package or weights are missing says so here
    paths = {"visual": cfg.models.video_weights, "audio": cfg.models.audio_weights}
    flags = {"visual": ("--video-model", "--video-weights"), "audio": ("--audio-model", "--audio-weights")}
    for modality in ("visual", "audio", "image", "text"):
        name = getattr(cfg.models, modality)
        try:
            registry.get_class(modality, name).weights_file_for(paths.get(modality))
        except WeightsNotFoundError as e:
            default = getattr(Config().models, modality)
            if store is None or store_models(store).get(modality) != name or name == default:
                raise
            pick, weights = flags.get(modality, (f"--set models.{modality}=NAME", "a weights file"))
            raise WeightsNotFoundError(f"{e} ({name} is the {modality} model of the features in {store}, so it is "
                                       f"the default there: give its weights with {weights}, or another model "
                                       f"with {pick} NAME --re-extract)") from None


def _run_catalog(args, lists: str, then=relist_stale_spaces, cfg: Config | None = None) -> int:
    """``run`` (lists="rebuild") and ``add`` (lists="add": the store must have an index).

    ``then(store)``: what updates the learned spaces' lists after the content lists are
    published (default: rewrite those another blocklist made). ``cfg``: the command's
    config when the caller has it already (default: :func:`config_from_args`).
    """
    cfg = config_from_args(args) if cfg is None else cfg
    if lists == "add":
        check_can_add(args.store)
    check_runnable(cfg, args.store)
    check_scheduler(args.scheduler)
    try:
        report = run_catalog(args.inputs, args.store, cfg, scheduler=args.scheduler, workers=args.workers,
                             progress=terminal_progress(args), re_extract=args.re_extract, lists=lists, then=then)
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
    cfg = config_from_args(args)
    fusion = cfg.fusion
    return _run_catalog(args, "add", then=lambda store: {args.space: add_to_space(store, args.space, fusion)},
                        cfg=cfg)


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
    base = base_config(args)
    text_model = base.models.text  # the store's: blocklist phrases are embedded as its items were
    if args.space != "content":
        check_space_flags(args, "lists")
        fusion = base.with_overrides(fusion=fusion_overrides(args)).fusion
        with writing(StoreLayout(args.store).root, f"lists --space {args.space}"):
            content = None
            if fusion.blocklist is not None and blocklist_changes(args.store, fusion):
                # the blocklist is the store's: every space's lists apply it, the content lists first
                content = relist(args.store, {**content_list_settings(args.store), "blocklist": fusion.blocklist,
                                              "blocklist_threshold": fusion.blocklist_threshold},
                                 progress=terminal_progress(args), text_model=text_model)
            summary = write_space_lists(args.store, args.space, fusion, device=_space_device(args))
            others = relist_stale_spaces(args.store)
        summary.update({"content": content} if content else {}, **({"spaces": others} if others else {}), **said)
        print(json.dumps(summary))
        return 0
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    with writing(StoreLayout(args.store).root, "lists"):
        if args.scheduler or args.workers:
            summary = dask_lists(args.store, stored_fusion(args.store, fusion_overrides(args)),
                                 scheduler=args.scheduler, workers=args.workers, progress=terminal_progress(args),
                                 text_model=text_model)
        else:
            summary = relist(args.store, fusion_overrides(args), progress=terminal_progress(args),
                             text_model=text_model)
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
                       weights=parse_weights(args.weights) if args.weights else None, progress=terminal_progress(args),
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
    check_runnable(cfg, args.store)
    check_scheduler(args.scheduler)
    return run_demo(args.store, cfg, workers=args.workers, scheduler=args.scheduler, progress=terminal_progress(args),
                    re_extract=args.re_extract)


def cmd_models(args) -> int:
    print(f"{'modality':<8} {'name':<24} {'dim':>5}  usable here")
    for modality, table in registry.REGISTRIES.items():
        for name, cls in sorted(table.items()):
            ok, why = cls.usable()
            print(f"{modality:<8} {name:<24} {getattr(cls, 'dim', '?'):>5}  {'yes' if ok else 'no'}: {why}")
    if args.check_amp:
        import numpy as np

        model = registry.load("visual", Config().models.visual, device=args.device, batch_size=4)
        clips = np.random.default_rng(0).integers(0, 256, (4, model.clip_len, 160, 160, 3), dtype=np.uint8)
        print(f"AMP check, {model.name}: {check_amp(model, clips).describe()}")
    return 0


def _learn_config(args):
    cfg = base_config(args).with_settings(args.settings)
    if getattr(args, "cold_fraction", None) is not None:
        cfg = cfg.with_overrides(learn={"cold_fraction": args.cold_fraction})
    return cfg.learn


def terminal_progress(args) -> TerminalProgress:
    """What a command shows while it works: bars and lines on stderr, or with ``--no-progress`` warnings only."""
    return TerminalProgress(bars=not getattr(args, "no_progress", False))


def cmd_train(args) -> int:
    summary = train_store(args.store, args.interactions, _learn_config(args), progress=terminal_progress(args))
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def cmd_evaluate(args) -> int:
    result = evaluate_store(args.store, args.interactions, _learn_config(args), progress=terminal_progress(args))
    print(json.dumps(result) if args.json else evaluation_table(result))
    return 0


def cmd_config(args) -> int:
    cfg = Config() if args.defaults else base_config(args).with_settings(args.settings)
    print(json.dumps(cfg.to_dict(), ensure_ascii=False) if args.json else cfg.to_toml(), end="\n" if args.json else "")
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
            "serve": cmd_serve, "config": cmd_config}


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
    log_warnings_to_stderr()
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
