"""Copy detection: near-duplicate mAP and span IoU per edit, before and after shot-level copy search; costs.

Builds, with ffmpeg (:mod:`reelsim.pipeline.edits`), a catalog of source
videos (photo-like shots moved like camera footage, cut together), their
edited copies and distractors (other sources of the same look), in two
disjoint splits drawn from different seeds:

- ``val`` (tuning: the thresholds of :class:`reelsim.similarity.copies.CopySettings`
  were chosen on it) and ``test`` (held out: reported);
- edits of each source: picture-in-picture at 20-50 % in a random corner
  over an unrelated host, split-screen beside an unrelated video, an excerpt
  of 5-40 %, mirror plus 80 % crop, 1.25x speed, 0.5x slow motion, a 9:16
  vertical re-frame, a colour grade with letterbox, logo and grain, a 35 %
  low-resolution re-encode; and trailer-style montages of 1.5-3 s excerpts
  of 3-6 sources.

Then ``reelsim.run`` analyses the catalog (regions on) and writes its lists
and copy index, and for every source it prints:

- **before**: the ranking of today's fused similarity (``Store.similar``);
- **after**: items with a copy of the source (``Store.matches``) first, by
  copy score, then the rest by fused similarity;
- per edit: mAP (AP of the one edit among the source's ranking, its other
  edits left out), its rank among the non-relevant items, and span IoU of
  the matched spans against the truth (copy side / source side);
- montages: each source found, and span IoU per source;
- cost: extraction seconds and shard bytes per video minute with regions
  on and off, on the same videos in the same process (alternating, best of
  ``--repeats``), and the copy index's bytes per minute.

Usage: python benchmarks/copies.py [--workdir DIR] [--split val|test|both] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import reelsim
from reelsim.config import Config
from reelsim.pipeline import edits as E

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract import load_text  # noqa: E402

SPLITS = {"val": (100, 3, 4, 1), "test": (200, 6, 10, 2)}  # seed base, sources, distractors, montages


def make_split(folder: Path, split: str, *, shots: int = 6, shot_s: float = 2.0) -> tuple[Path, dict]:
    """The split's media and manifest; truth: {item id: {"kind", "pieces": [Piece], "params" (edits only)}}."""
    base, n_src, n_dis, n_mont = SPLITS[split]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(base)
    truth: dict[str, dict] = {}
    rows = []
    src = {}
    for i in range(n_src):
        sid = f"{split}-src{i}"
        src[sid] = E.build_source(folder / f"{sid}.mp4", base + i, n_shots=shots, shot_s=shot_s)
        rows.append({"id": sid, "video": f"{sid}.mp4"})
        truth[sid] = {"kind": "source", "pieces": []}
    for i in range(n_dis):
        did = f"{split}-distractor{i}"
        E.build_source(folder / f"{did}.mp4", base + 50 + i, n_shots=shots, shot_s=shot_s)
        rows.append({"id": did, "video": f"{did}.mp4"})
        truth[did] = {"kind": "distractor", "pieces": []}
    hosts = [E.build_source(folder / f"{split}-host{i}.mp4", base + 80 + i, n_shots=shots, shot_s=shot_s)
             for i in range(n_src)]  # not in the catalog
    for i, (sid, path) in enumerate(src.items()):
        dur = E.duration_s(path)
        made = []
        scale, corner = float(rng.uniform(0.2, 0.5)), ["tl", "tr", "bl", "br"][int(rng.integers(4))]
        made.append(E.picture_in_picture(path, hosts[i], folder / f"{sid}-pip.mp4", scale=round(scale, 2),
                                         corner=corner))
        made.append(E.split_screen(path, hosts[(i + 1) % len(hosts)], folder / f"{sid}-split.mp4"))
        frac = float(rng.uniform(0.05, 0.4))
        start = float(rng.uniform(0, dur * (1 - frac)))
        made.append(E.excerpt(path, folder / f"{sid}-excerpt.mp4", start_s=round(start, 2),
                              dur_s=round(frac * dur, 2)))
        made.append(E.mirror_crop(path, folder / f"{sid}-mirror-crop.mp4"))
        made.append(E.speed_change(path, folder / f"{sid}-speed.mp4", speed=1.25))
        made.append(E.speed_change(path, folder / f"{sid}-slowmo.mp4", speed=0.5))
        made.append(E.vertical_reframe(path, folder / f"{sid}-vertical.mp4"))
        made.append(E.grade_letterbox(path, folder / f"{sid}-grade.mp4", seed=i))
        made.append(E.low_resolution(path, folder / f"{sid}-lowres.mp4"))
        for t in made:
            eid = t.path.stem
            rows.append({"id": eid, "video": t.path.name})
            truth[eid] = {"kind": t.kind, "pieces": [p._replace(source=sid) for p in t.pieces], "params": t.params}
    for m in range(n_mont):
        k = int(rng.integers(3, 7))
        names = [list(src)[j % len(src)] for j in rng.permutation(max(k, len(src)))[:k]]
        names = list(dict.fromkeys(names))
        parts = []
        for sid in names:
            dur = E.duration_s(src[sid])
            d = float(rng.uniform(1.5, 3.0))
            parts.append((src[sid], round(float(rng.uniform(0, dur - d)), 2), round(d, 2)))
        t = E.montage(parts, folder / f"{split}-montage{m}.mp4")
        eid = t.path.stem
        rows.append({"id": eid, "video": t.path.name})
        by_file = {p.name: s for s, p in src.items()}
        truth[eid] = {"kind": "montage", "pieces": [p._replace(source=by_file[p.source]) for p in t.pieces]}
    manifest = folder / "catalog.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return manifest, truth


def iou(pred: list[tuple[float, float]], true: list[tuple[float, float]]) -> float:
    """Temporal IoU of two unions of intervals (seconds)."""
    if not pred or not true:
        return 0.0
    edges = sorted({x for a, b in pred + true for x in (a, b)})
    inter = union = 0.0
    for a, b in zip(edges, edges[1:]):
        m = (a + b) / 2
        p = any(s <= m < e for s, e in pred)
        t = any(s <= m < e for s, e in true)
        inter += (b - a) * (p and t)
        union += (b - a) * (p or t)
    return inter / union if union else 0.0


def ap_of(ranked: list[str], relevant: set[str]) -> float:
    hits, total = 0, 0.0
    for r, item in enumerate(ranked, start=1):
        if item in relevant:
            hits += 1
            total += hits / r
    return total / max(1, len(relevant))


def rankings(store, sources: list[str], n: int, matches: dict | None = None) -> dict[str, dict[str, list[str]]]:
    """Per source: the ``before`` (fused) and ``after`` (copies first) rankings of every other item.

    ``matches``: ``store.matches`` of each source, when already read.
    """
    out = {}
    for s in sources:
        fused = [nb.item for nb in store.similar(s, k=n - 1)]
        copies = {}
        for seg in (matches[s] if matches is not None else store.matches(s)):
            copies[seg.other] = max(copies.get(seg.other, 0.0), seg.score * min(seg.shots, 4))
        after = sorted(copies, key=lambda o: -copies[o]) + [i for i in fused if i not in copies]
        out[s] = {"before": fused, "after": after}
    return out


def evaluate(store_path: Path, truth: dict) -> dict:
    store = reelsim.open_store(store_path)
    ids = store.ids()
    matches = {i: store.matches(i) for i in ids}  # each call reads the copy index: once per item
    sources = [i for i in ids if truth[i]["kind"] == "source"]
    edits_of = {s: [e for e in ids if any(p.source == s for p in truth[e]["pieces"])] for s in sources}
    ranks = rankings(store, sources, len(ids), matches)
    per_edit: dict[str, dict[str, list]] = {}
    overall = {"before": [], "after": [], "separated_before": [], "separated_after": []}
    for s in sources:
        rel = set(edits_of[s])
        for when in ("before", "after"):
            ranked = ranks[s][when]
            overall[when].append(ap_of(ranked, rel))
            pos = {item: r for r, item in enumerate(ranked)}
            worst_edit = max(pos.get(e, len(ranked)) for e in rel)
            best_other = min((pos[i] for i in ranked if i not in rel), default=len(ranked))
            overall[f"separated_{when}"].append(worst_edit < best_other)
            for e in rel:
                kind = truth[e]["kind"]
                alone = [i for i in ranked if i == e or i not in rel]  # the source's other edits left out
                r = alone.index(e) + 1 if e in alone else len(ids)
                per_edit.setdefault(kind, {}).setdefault(f"ap_{when}", []).append(1.0 / r)
                per_edit[kind].setdefault(f"rank_{when}", []).append(r)
        for e in rel:  # spans, from the edit's side
            kind = truth[e]["kind"]
            segs = [g for g in matches[e] if g.other == s]
            pieces = [p for p in truth[e]["pieces"] if p.source == s]
            i_copy = iou([(g.item_start, g.item_end) for g in segs], [(p.dst_start, p.dst_end) for p in pieces])
            i_src = iou([(g.other_start, g.other_end) for g in segs], [(p.src_start, p.src_end) for p in pieces])
            per_edit[kind].setdefault("iou_copy", []).append(i_copy)
            per_edit[kind].setdefault("iou_source", []).append(i_src)
            per_edit[kind].setdefault("found", []).append(bool(segs))
            if kind == "montage":
                per_edit[kind].setdefault("montage_rows", []).append((e, s, bool(segs), i_copy, i_src,
                                                                      [g.edit for g in segs]))
    false = 0
    for item in ids:  # copies claimed between items that share no footage
        a = {p.source for p in truth[item]["pieces"]} | ({item} if truth[item]["kind"] == "source" else set())
        for g in matches[item]:
            b = {p.source for p in truth[g.other]["pieces"]} | ({g.other} if truth[g.other]["kind"] == "source"
                                                                 else set())
            false += not (a & b)
    return {"per_edit": per_edit, "overall": overall, "false_copies": false // 2, "items": len(ids),
            "sources": len(sources)}


def print_report(name: str, res: dict) -> None:
    o = res["overall"]
    print(f"\n== {name}: {res['items']} items, {res['sources']} sources; {load_text()}")
    print(f"mAP before {np.mean(o['before']):.3f}  after {np.mean(o['after']):.3f};  every edit above every "
          f"distractor: before {np.mean(o['separated_before']):.0%} of sources, after "
          f"{np.mean(o['separated_after']):.0%};  copies claimed between unrelated items: {res['false_copies']}")
    print(f"{'edit':<12} {'n':>3} {'mAP before':>10} {'mAP after':>9} {'rank before':>12} {'rank after':>11} "
          f"{'found':>6} {'IoU copy':>9} {'IoU source':>10}")
    for kind, d in sorted(res["per_edit"].items()):
        rb, ra = d["rank_before"], d["rank_after"]
        print(f"{kind:<12} {len(rb):>3} {np.mean(d['ap_before']):>10.3f} {np.mean(d['ap_after']):>9.3f} "
              f"{min(rb):>5}-{max(rb):<6} {min(ra):>4}-{max(ra):<6} {np.mean(d['found']):>6.0%} "
              f"{np.mean(d['iou_copy']):>9.2f} {np.mean(d['iou_source']):>10.2f}")
    for e, s, found, ic, isrc, kinds in res["per_edit"].get("montage", {}).get("montage_rows", []):
        print(f"  montage {e}: source {s}: {'found' if found else 'MISSED'}, IoU copy {ic:.2f} source {isrc:.2f} "
              f"{kinds}")


def cost(folder: Path, videos: list[Path], repeats: int) -> None:
    """Extraction seconds and shard bytes per video minute, regions off and on, same videos, same process."""
    import torch

    from reelsim.pipeline.item import Models, analyse_item
    from reelsim.storage.manifest import Item
    from reelsim.storage.shards import write_shard

    torch.set_num_threads(1)
    cfgs = {"off": Config().with_settings(["regions.enabled=false"]), "on": Config()}
    models = Models(Config(), device="cpu")
    analyse_item(Item(id="warm", video=str(videos[0])), cfgs["on"], models)  # load models, warm caches
    best = {m: {} for m in cfgs}
    size = {m: 0 for m in cfgs}
    minutes = sum(E.duration_s(v) for v in videos) / 60
    for r in range(repeats):
        for v in videos:
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                t = time.perf_counter()
                feats = analyse_item(Item(id=v.stem, video=str(v)), cfgs[mode], models)
                dt = time.perf_counter() - t
                best[mode][v] = min(best[mode].get(v, np.inf), dt)
                if r == 0:
                    path = write_shard(folder / f"cost-{mode}", feats, config_hash=cfgs[mode].feature_hash(),
                                       input_sha256={})
                    size[mode] += path.stat().st_size
    t_off, t_on = sum(best["off"].values()) / minutes, sum(best["on"].values()) / minutes
    print(f"\n== cost on {len(videos)} videos, {minutes:.2f} video minutes, best of {repeats}; {load_text()}")
    print(f"extraction: {t_off:.1f} s/min without regions, {t_on:.1f} s/min with: ratio {t_on / t_off:.2f} "
          f"(goal <= 1.3)")
    print(f"shards: {size['off'] / minutes / 1e3:.0f} KB/min without regions, {size['on'] / minutes / 1e3:.0f} "
          f"KB/min with: ratio {size['on'] / size['off']:.2f} (goal <= 2)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--split", choices=("val", "test", "both"), default="test")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="reelsim-copies-"))
    print(f"workdir {work}; {load_text()}")
    for split in (("val", "test") if args.split == "both" else (args.split,)):
        t = time.perf_counter()
        manifest, truth = make_split(work / split, split)
        print(f"{split}: media made in {time.perf_counter() - t:.0f} s")
        store = work / f"{split}-store"
        t = time.perf_counter()
        report = reelsim.run([manifest], store, Config(), workers=args.workers)
        print(f"{split}: run {report.summary()} in {time.perf_counter() - t:.0f} s")
        body = json.loads((store / "report.json").read_text())
        print(f"{split}: lists {json.dumps(body.get('lists', {}))[:300]}")
        print_report(split, evaluate(store, truth))
        copies_bytes = sum(p.stat().st_size for p in (store / "index" / "copies").iterdir())
        minutes = sum(E.duration_s(work / split / f"{i}.mp4") for i in truth) / 60
        print(f"copy index: {copies_bytes / minutes / 1e3:.0f} KB per video minute ({minutes:.1f} min indexed)")
    if not args.skip_cost:
        vids = sorted((work / args.split if args.split != "both" else work / "test").glob("*-src*.mp4"))
        vids = [v for v in vids if v.stem.count("-") == 1][:4]
        cost(work, vids, args.repeats)


if __name__ == "__main__":
    main()
