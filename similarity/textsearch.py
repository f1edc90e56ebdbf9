"""Text search over a store, with a list of banned queries.

``reelsim search "QUERY"`` embeds the query with the store's text model
(all-MiniLM-L6-v2) and ranks items by the cosine between the query and each
item's text embedding, both centred the same way (the catalog's stored text
mean, :func:`reelsim.similarity.fusion.normalise_queries`). With a trained
model and ``space="learned"``, the query is also passed through the content
tower as an item that has only text, and items are ranked by the cosine of
learned-space vectors.

A banned-query list is a UTF-8 text file of phrases, one per line (blank
lines and lines starting with ``#`` are skipped). The query and each phrase
are first folded (:func:`fold_text`: Unicode NFKC, which turns full-width
``ｂｏｍｂ`` and mathematical ``𝐛𝐨𝐦𝐛`` into ``bomb``; look-alike letters of other
scripts to the Latin letter they imitate, :data:`CONFUSABLES`, so Cyrillic
``bоmb`` is ``bomb``; invisible format characters and accents dropped; case
folded). A query is refused when the cosine between the MiniLM embeddings
of the folded query and a folded phrase is at least ``threshold`` (default
:data:`BANNED_THRESHOLD`), or when the folded query contains the folded
phrase as whole tokens (:func:`tokens`: symbols are part of a token, so the
phrase ``c++`` is the token ``c++``, which "vitamin c supplements" does not
contain). Measured MiniLM cosines with the phrase
"how to make a bomb": "make a bomb" 0.88, "bomb making instructions" 0.86,
"how do I build an explosive device" 0.75, "bath bomb gift set" 0.42,
"the bomb dot com party music" 0.35 (docs/learning.md has more).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reelsim.errors import BannedQueryError, StoreError, UsageError
from reelsim.extractors.registry import load
from reelsim.similarity.answer import StoreReader, VersionView
from reelsim.similarity.catalog import load_catalog, load_items_meta
from reelsim.similarity.fusion import normalise_queries
from reelsim.similarity.hygiene import pair_scores, select_by
from reelsim.similarity.rebuild import store_text_model
from reelsim.similarity.search import Scored
from reelsim.similarity.spaces import has_model, id_rank, load_model, space_pair_scores, space_vectors
from reelsim.similarity.towers import torch_threads
from reelsim.storage.layout import StoreLayout
from reelsim.storage.session import read_consistent

#: MiniLM cosine at or above which a query counts as a banned phrase
BANNED_THRESHOLD = 0.6
SEARCH_SPACES = ("content", "learned")
#: torch threads that embed a query: one, so that the CLI, the API and the service (threads of their own,
#: other thread counts) get the same float32 bits and the same rounded scores
QUERY_THREADS = 1


def _pairs(looks: str, latin: str) -> dict[str, str]:
    assert len(looks) == len(latin)
    return dict(zip(looks, latin))


#: Letters of other scripts that look like a Latin letter -> that letter (applied after NFKC, before case
#: folding): Cyrillic, Greek, Armenian, Cherokee capitals, Latin small capitals and IPA letters, from the
#: look-alikes of Unicode's confusables list (UTS #39) that an attacker can type to dodge a phrase. Digits
#: standing for letters (``b0mb``) are not folded: ``100`` is not ``loo``.
CONFUSABLES = {
    **_pairs("АВСЕНІЈКМОРЅТХУӀаеіјорѕсхуԁԛԝһӏѵѴ", "ABCEHIJKMOPSTXYlaeijopscxydqwhlvV"),  # Cyrillic
    **_pairs("вкмнтпгь", "bkmhtnrb"),  # lower-case Cyrillic imitating a Latin capital or letter
    **_pairs("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαβεικνορτυχγωϲϳϜ", "ABEZHIKMNOPTYXabeikvoptuxywcjF"),  # Greek
    **_pairs("օսհոզաՏՕ", "ouhnqwSO"),  # Armenian
    **_pairs("ᎪᏴᏟᎠᎬᎻᏦᏞᎷᏢᏚᎢᏙᎳᏃ", "ABCDEHKLMPSTVWZ"),  # Cherokee
    **_pairs("ᴀʙᴄᴅᴇғɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢıȷɩɡɑ", "abcdefghijklmnoprstuvwyzijiga"),  # small capitals, dotless, IPA
}


def fold_text(text: str) -> str:
    """``text`` as banned-query matching sees it: NFKC, look-alikes to Latin, no format characters
    or accents, case-folded.

    Examples
    --------
    >>> fold_text("ｈｏｗ ｔｏ ｍａｋｅ ａ ｂｏｍｂ"), fold_text("B\u043em\u0432"), fold_text("Caf\u00e9\u200b!")
    ('how to make a bomb', 'bomb', 'cafe!')
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(CONFUSABLES.get(ch, ch) for ch in text if unicodedata.category(ch) != "Cf")
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return unicodedata.normalize("NFKC", text).casefold()


#: punctuation that is part of a token, like letters and symbols (``c#``, ``50%``, ``r&d``, ``a*``, ``@home``)
TOKEN_PUNCTUATION = set("#%&*@")


def tokens(text: str) -> list[str]:
    """The tokens of ``text``: runs of letters, digits, marks, symbols (Unicode S*: ``+``, ``$``, ``=``)
    and :data:`TOKEN_PUNCTUATION`; other punctuation and spaces separate them.

    Examples
    --------
    >>> tokens("C++ and c#, vitamin-c? 50% (bomb)")
    ['C++', 'and', 'c#', 'vitamin', 'c', '50%', 'bomb']
    """
    out, word = [], []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "LNMS" or ch == "_" or ch in TOKEN_PUNCTUATION:
            word.append(ch)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return out


class Hit(NamedTuple):
    """One search result: item id, score (cosine), title."""

    item: str
    score: float
    title: str


def search_json(query: str, space: str, hits: list[Hit]) -> dict:
    """``reelsim search --json`` and the service's ``GET /search``: ``{"query", "space", "results": [{"item",
    "score", "title"}]}``."""
    return {"query": query, "space": space,
            "results": [{"item": h.item, "score": h.score, "title": h.title} for h in hits]}


def read_banned(path: str | Path) -> list[tuple[int, str]]:
    """(line number, phrase) of a UTF-8 banned-phrases file; blank and ``#`` lines skipped.

    Raises
    ------
    UsageError
        Missing file, a line that is not UTF-8 (its number is named), or no phrase in it.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such banned-phrases file")
    out = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8").strip()
        except UnicodeDecodeError as e:
            raise UsageError(f"{path}:{n}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                             "save the banned-phrases file as UTF-8") from None
        if line and not line.startswith("#"):
            out.append((n, line))
    if not out:
        raise UsageError(f"{path}: the banned-phrases file has no phrase")
    return out


def banned_match(q: np.ndarray, query: str, phrases: list[tuple[int, str]], P: np.ndarray,
                 threshold: float) -> tuple[int, str, float] | None:
    """The first banned phrase the query matches, as (line, phrase, cosine), or None.

    Parameters
    ----------
    q : float32 (d,)
        Unit MiniLM embedding of the folded ``query`` (:func:`fold_text`).
    query : str
        The query (folded here for the containment test).
    phrases : list of (line, phrase)
    P : float32 (p, d)
        Unit MiniLM embeddings of the folded phrases.
    threshold : float
        Cosine at or above which a query matches.

    Examples
    --------
    >>> P = np.array([[1.0, 0.0]], np.float32)
    >>> banned_match(np.array([0.8, 0.6], np.float32), "x", [(1, "bad")], P, 0.6)
    (1, 'bad', 0.8)
    >>> banned_match(np.array([0.0, 1.0], np.float32), "a bad idea", [(1, "bad")], P, 0.6)
    (1, 'bad', 0.0)
    >>> banned_match(np.array([0.0, 1.0], np.float32), "badminton", [(1, "bad")], P, 0.6) is None
    True
    >>> banned_match(np.array([0.0, 1.0], np.float32), "vitamin c supplements", [(1, "c++")], P, 0.6) is None
    True
    """
    if not -1 <= threshold <= 1:
        raise UsageError(f"the banned-query threshold is a cosine in [-1, 1], got {threshold}")
    cos = P @ q
    words = _joined(query)
    for j, (line, phrase) in enumerate(phrases):
        if cos[j] >= threshold or (tokens(fold_text(phrase)) and _joined(phrase) in words):
            return line, phrase, round(float(cos[j]), 4)
    return None


def _joined(text: str) -> str:
    """The folded tokens of ``text`` joined by single spaces, with a space at each end (for whole-token
    containment: tokens hold no spaces)."""
    return " " + " ".join(tokens(fold_text(text))) + " "


def check_query(query: str) -> None:
    """:class:`UsageError` for a query that is empty or not text (bytes that are not UTF-8 on a command line
    reach Python as lone surrogates)."""
    if not query.strip():
        raise UsageError("the search query is empty")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as e:
        ch = query[e.start]
        byte = f"byte 0x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else f"U+{ord(ch):04X}"
        raise UsageError(f"the search query is not UTF-8 text ({byte} at character {e.start + 1})") from None


def search(store: str | Path, query: str, k: int, *, space: str = "content", banned: str | Path | None = None,
           threshold: float = BANNED_THRESHOLD, text_model: str | None = None,
           reader: StoreReader | None = None) -> list[Hit]:
    """Rank the store's items for a text query.

    ``reader``: a :class:`StoreReader` kept between queries (``reelsim
    serve``): what does not change within a store version (the catalog, the
    learned space's vectors, titles, the banned phrases' embeddings) is read
    once per version and kept with it, so a query costs one embedding and
    one matrix-vector product.

    Raises
    ------
    BannedQueryError
        The query matches a banned phrase (the message names the file and line, not the phrase).
    UsageError
        Empty query, bad ``k`` or space, no text embeddings in the store.
    StoreError
        No catalog, or ``space="learned"`` without a trained model.

    The results follow the store's hygiene (:func:`ranked_with_hygiene`): a
    blocklisted item is never returned.
    """
    check_query(query)
    if k < 1:
        raise UsageError("-k must be at least 1")
    if space not in SEARCH_SPACES:
        raise UsageError(f"search space must be one of {', '.join(SEARCH_SPACES)}, got {space!r}")
    reader = reader or StoreReader(store)
    view = reader.view()
    layout = StoreLayout(store)
    layout.require_catalog()
    # the model that embedded the items' texts (read from shards: once per store version, not per query)
    text_model = text_model or view.live(("search", "text model"), lambda: store_text_model(layout.root))
    model = load("text", text_model, device="cpu")
    if banned:
        phrases, P = view.live(("banned", str(banned), _mtime(banned)), lambda: _banned_vectors(banned, model))
        with torch_threads(QUERY_THREADS):
            qf = model.extract([fold_text(query)])[0]
        hit = banned_match(qf, query, phrases, P, threshold)
        if hit:
            line, _, cos = hit
            raise BannedQueryError(f"query refused: it matches the banned phrase on line {line} of {banned} "
                                   f"(text similarity {cos:.2f}, threshold {threshold:.2f}, or the phrase is in it)")
    cat, stored_w = view.live(("search", "catalog"), lambda: read_consistent(
        layout, lambda _: load_catalog(layout.require_catalog(), mmap=True)))  # mapped: shared, not copied
    with torch_threads(QUERY_THREADS):  # the same bits in every process, whatever its thread count
        q = model.extract([query])
    if "text" not in cat.vectors or not cat.masks["text"].any():
        raise UsageError(f"the items in {store} have no text embeddings to search")
    if cat.raw_dim("text") != q.shape[1]:
        raise UsageError(f"the store's text embeddings have {cat.raw_dim('text')} dimensions, "
                         f"{text_model} gives {q.shape[1]}")
    uq, mq = normalise_queries(cat, {"text": q})
    sv = None
    if space == "content":
        scores = cat.vectors["text"] @ uq["text"][0]
        ok = cat.masks["text"]
    else:
        if not has_model(store):
            raise StoreError(f"--space learned needs a trained model: run `reelsim train --interactions FILE "
                             f"--store {store}` first")
        learned, sv, ok = view.live(("search", "learned"), lambda: _learned_space(layout, cat))
        qv = learned.tower.embed(uq, mq)[0]
        scores = sv.T @ qv
    scores = np.where(ok, np.round(scores.astype(np.float64), 6), -np.inf)
    rows = ranked_with_hygiene(reader, view, cat, stored_w, sv, space, scores, k)
    meta = view.live(("search", "titles"), lambda: read_consistent(layout, lambda _: (
        load_items_meta(layout.items_meta) if os.path.lexists(layout.items_meta) else {})))
    return [Hit(cat.ids[r], float(scores[r]), meta.get(cat.ids[r], {}).get("title", "")) for r in rows]


def _mtime(path: str | Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _banned_vectors(banned: str | Path, model) -> tuple[list[tuple[int, str]], np.ndarray]:
    """(phrases, their unit embeddings float32 (p, d)) of a banned-phrases file, folded (:func:`fold_text`)."""
    phrases = read_banned(banned)
    return phrases, model.extract([fold_text(p) for _, p in phrases])


def _learned_space(layout: StoreLayout, cat):
    """(model, learned SpaceVectors of ``cat``, bool (N,) rows with a vector): it checks that the model fits
    the catalog."""
    learned = load_model(layout.root)
    sv = space_vectors(cat, learned, "learned")
    return learned, sv, np.any(sv.T != 0, axis=1)


def top_rows(scores: np.ndarray, k: int, rank: np.ndarray) -> np.ndarray:
    """Rows int64 (<= k,) of the ``k`` best finite ``scores`` (float64 (N,)), best first, ties by ``rank``
    (each row's place in id order): a partition, then a sort of the rows that can be among them.

    Examples
    --------
    >>> top_rows(np.array([0.5, 0.9, 0.5, -np.inf]), 2, np.array([1, 0, 0, 2])).tolist()
    [1, 2]
    """
    n = scores.size
    if k < n:
        kth = np.partition(-scores, k - 1)[k - 1]  # the k-th best score: every row at or above it may be in
        cand = np.flatnonzero(-scores <= kth)
    else:
        cand = np.arange(n)
    cand = cand[np.lexsort((rank[cand], -scores[cand]))][:k]
    return cand[np.isfinite(scores[cand])]


def ranked_with_hygiene(reader: StoreReader, view: VersionView, cat, weights: dict, sv, space: str,
                        scores: np.ndarray, k: int) -> list[int]:
    """The ``k`` best rows by ``scores`` (float64 (N,), -inf: not rankable), with the store's hygiene.

    The store's blocklist keeps its items out; the dedup and MMR of the
    space's lists work on a pool of the ``oversample * k`` best, with pair
    scores in that space (the fused content score, or the learned space's). ``view``: the reader's view the
    query started from (its catalog is ``cat``).
    """
    blocked = reader.blocked_mask(view)
    if blocked is not None and blocked.size == scores.size:
        scores = np.where(blocked, -np.inf, scores)
    hygiene, oversample = view.hygiene_of(space)
    pool = k * oversample if hygiene.on else k
    order = top_rows(scores, pool, view.live(("search", "id-rank"), lambda: id_rank(cat.ids)))
    if not hygiene.on or order.size == 0:
        return order[:k].tolist()
    I, S = order[None, :], scores[order][None, :]
    if sv is None:
        pair = pair_scores(cat, weights, [m for m in cat.vectors if weights.get(m, 0) > 0], I)
    else:
        pair = space_pair_scores(sv, I)
    picked = select_by(Scored(I, S, {}), k, pair, hygiene)
    return [int(r) for r in picked.I[0] if r >= 0]
