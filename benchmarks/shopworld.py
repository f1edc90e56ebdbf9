"""A second interaction world for benchmarks/learn.py, made without ``similarity/synthetic.py``.

``similarity/synthetic.py`` hides categories in a linear projection of
made-up embeddings. This world is a small shop instead, with real text:

- **categories in complement pairs**: 50 categories, 25 pairs of a product
  and what goes with it (coffee beans and coffee filters, a camera and memory
  cards); people who look at one often look at the other;
- **look-alike text**: several categories read alike but are not used
  together (coffee beans, coffee table; tortillas, tortilla chips; dog food,
  cat food; a toothbrush, a hair brush, a paint brush), and each category
  has several names, so the text of an item says less than its category;
- **vague titles**: half of the titles name the item only by a word it
  shares with look-alike categories ("Northwind coffee, 2 pack" may be
  beans, filters or a table);
- **brands across categories**: 40 brands, each in 4 to 8 categories with
  its own product lines, lead every title ("Northwind Barista coffee table",
  "Northwind Barista arabica coffee");
- **Zipf popularity** over all items (exponent ``popularity_skew``);
- **users with 1-3 interests** (categories, chosen by category popularity),
  who browse in **sessions** of about ``session_length`` rows: each row of a
  session is an item of the session's interest (70%), of its complement
  (15%), or any item by popularity (15%), drawn by popularity;
- about one row in ten is followed by a purchase of the same item.

Item text is the title; the catalog is embedded with reelsim's real text
model (all-MiniLM-L6-v2) by :func:`embed_titles`. The split of the issue's
measurement (20% cold items, the last 20% of each user's rows held out) is
made by ``reelsim.similarity.evaluate``, not here: the log holds every row.

Examples
--------
>>> world = make_world(400, n_users=300, n_interactions=6000, seed=0)
>>> len(world.titles), int(world.category.max()) + 1, world.complement[world.complement[7]] == 7
(400, 50, True)
>>> int(world.log.user.max()) < 300 and set(world.log.event.tolist()) <= {"view", "purchase"}
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reelsim.similarity.synthetic import SyntheticLog

#: 25 complement pairs; each category has several names (what its titles say)
PAIRS = [
    (["coffee beans", "whole bean coffee", "arabica coffee", "espresso roast"],
     ["coffee filters", "paper coffee filters", "cone filters"]),
    (["coffee table", "living room coffee table", "side table"], ["table lamp", "bedside lamp", "desk lamp"]),
    (["tortillas", "flour tortillas", "corn tortillas", "wraps"], ["salsa", "tomato salsa", "hot salsa"]),
    (["tortilla chips", "corn chips", "nacho chips"], ["guacamole", "avocado dip", "guacamole dip"]),
    (["dog food", "dry dog food", "puppy food", "dog kibble"], ["dog leash", "dog lead", "retractable leash"]),
    (["cat food", "wet cat food", "kitten food", "cat kibble"], ["cat litter", "clumping litter", "litter box"]),
    (["tennis racket", "tennis racquet", "junior tennis racket"], ["tennis balls", "pressurised tennis balls"]),
    (["running shoes", "trail running shoes", "road running shoes"], ["running socks", "sports socks"]),
    (["dress shoes", "leather shoes", "oxford shoes"], ["shoe polish", "leather polish", "shoe care kit"]),
    (["phone case", "silicone phone case", "leather phone case"], ["screen protector", "tempered glass protector"]),
    (["camera", "mirrorless camera", "compact camera", "digital camera"], ["memory card", "SD card", "microSD card"]),
    (["camera bag", "camera backpack", "camera case"], ["lens cleaning kit", "lens cloth", "lens pen"]),
    (["printer", "inkjet printer", "laser printer"], ["ink cartridge", "toner cartridge", "printer ink"]),
    (["printer paper", "copy paper", "A4 paper"], ["stapler", "desk stapler", "heavy duty stapler"]),
    (["baby bottle", "feeding bottle", "anti-colic bottle"], ["bottle brush", "bottle cleaning brush"]),
    (["water bottle", "sports bottle", "insulated bottle"], ["gym bag", "sports bag", "duffel bag"]),
    (["wine glasses", "red wine glasses", "crystal glasses"], ["corkscrew", "wine opener", "waiter's friend"]),
    (["red wine", "merlot", "cabernet sauvignon", "rioja"], ["cheese", "aged cheddar", "brie", "manchego"]),
    (["bike helmet", "cycling helmet", "mountain bike helmet"], ["bike lights", "LED bike light set"]),
    (["bike pump", "floor pump", "mini bike pump"], ["inner tube", "bike tube", "puncture repair kit"]),
    (["garden hose", "expandable hose", "hose reel"], ["hose nozzle", "spray nozzle", "hose connector"]),
    (["garden gloves", "gardening gloves", "work gloves"], ["pruning shears", "secateurs", "garden shears"]),
    (["toothbrush", "electric toothbrush", "bamboo toothbrush"], ["toothpaste", "whitening toothpaste"]),
    (["hair dryer", "ionic hair dryer", "travel hair dryer"], ["hair brush", "paddle brush", "detangling brush"]),
    (["paint brush", "decorating brush", "paint brush set"], ["painter's tape", "masking tape", "decorator's tape"]),
]
#: what a vague title calls an item of the category (its first name -> words shared with look-alike categories)
VAGUE = {
    "coffee beans": ["coffee", "coffee pack"], "coffee filters": ["coffee", "filters"],
    "coffee table": ["coffee", "table"], "table lamp": ["lamp", "table light"],
    "tortillas": ["tortillas", "mexican"], "salsa": ["dip", "mexican sauce"],
    "tortilla chips": ["tortilla", "mexican snack"], "guacamole": ["dip", "avocado"],
    "dog food": ["pet food", "dog"], "dog leash": ["pet lead", "dog"],
    "cat food": ["pet food", "cat"], "cat litter": ["pet care", "cat"],
    "tennis racket": ["tennis", "racket"], "tennis balls": ["tennis", "balls"],
    "running shoes": ["shoes", "running"], "running socks": ["socks", "running"],
    "dress shoes": ["shoes", "formal"], "shoe polish": ["shoe care", "polish"],
    "phone case": ["phone", "case"], "screen protector": ["phone", "screen"],
    "camera": ["camera", "photo"], "memory card": ["card", "storage"],
    "camera bag": ["camera", "bag"], "lens cleaning kit": ["lens", "photo care"],
    "printer": ["printer", "office"], "ink cartridge": ["printer", "ink"],
    "printer paper": ["printer", "paper"], "stapler": ["office", "stationery"],
    "baby bottle": ["bottle", "baby"], "bottle brush": ["brush", "bottle"],
    "water bottle": ["bottle", "sports"], "gym bag": ["bag", "sports"],
    "wine glasses": ["wine", "glasses"], "corkscrew": ["wine", "opener"],
    "red wine": ["wine", "red"], "cheese": ["deli", "cheese"],
    "bike helmet": ["bike", "helmet"], "bike lights": ["bike", "lights"],
    "bike pump": ["bike", "pump"], "inner tube": ["bike", "tyre"],
    "garden hose": ["garden", "hose"], "hose nozzle": ["garden", "nozzle"],
    "garden gloves": ["garden", "gloves"], "pruning shears": ["garden", "shears"],
    "toothbrush": ["brush", "dental"], "toothpaste": ["dental", "paste"],
    "hair dryer": ["hair", "dryer"], "hair brush": ["brush", "hair"],
    "paint brush": ["brush", "decorating"], "painter's tape": ["tape", "decorating"],
}
#: share of titles that name the item only vaguely (a word it shares with look-alike categories)
VAGUE_SHARE = 0.5
#: product lines: each brand uses a few across its categories ("Northwind Barista ...")
LINES = ["Barista", "Explorer", "Home", "Studio", "Active", "Essentials", "Select", "Signature", "Urban", "Outdoor",
         "Kids", "Comfort"]
BRANDS = ["Northwind", "Acme", "Bluebird", "Everyday", "Summit", "Oakridge", "Nova", "Pioneer", "Harbor", "Vista",
          "Redwood", "Silverline", "Urban", "Maple", "Keystone", "Lumen", "Orbit", "Evergreen", "Crescent", "Atlas",
          "Fjord", "Tandem", "Meridian", "Brightside", "Cobalt", "Sierra", "Willow", "Granite", "Polar", "Beacon",
          "Horizon", "Juniper", "Ember", "Cascade", "Prairie", "Monarch", "Aurora", "Driftwood", "Sable", "Zenith"]
ADJECTIVES = ["classic", "premium", "eco", "compact", "large", "small", "deluxe", "basic", "pro", "lightweight",
              "organic", "black", "white", "blue", "red", "green", "grey", "value pack", "family size", "travel"]
VARIANTS = ["1 pack", "2 pack", "3 pack", "set of 4", "6 pack", "500 g", "1 kg", "250 ml", "1 l", "size M",
            "size L", "10 pieces", "20 pieces", "gift box", "refill", "2024 edition", "new", "limited edition"]


@dataclass
class ShopWorld:
    """A shop of N items and its log.

    ids, titles : list of str (N,).
    category : int64 (N,), 0..49; ``complement[c]`` is c's partner category (int64 (50,)).
    brand : int64 (N,).
    popularity : float64 (N,), Zipf weights (sum 1).
    log : SyntheticLog (user, item, event, timestamp), rows in user order, then time.
    """

    ids: list[str]
    titles: list[str]
    category: np.ndarray
    complement: np.ndarray
    brand: np.ndarray
    popularity: np.ndarray
    log: SyntheticLog


def make_items(n_items: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Titles, categories, brands and the complement map of ``n_items`` items (categories near equal in size)."""
    names = [n for pair in PAIRS for n in pair]  # category 2p and 2p + 1 are complements
    n_cat = len(names)
    complement = np.arange(n_cat) ^ 1
    category = rng.permutation(np.arange(n_items) % n_cat)
    brand_cats = [rng.choice(n_cat, size=rng.integers(4, 9), replace=False) for _ in BRANDS]
    makers = [[b for b, cats in enumerate(brand_cats) if c in cats] or [int(rng.integers(len(BRANDS)))]
              for c in range(n_cat)]
    brand = np.array([rng.choice(makers[c]) for c in category], np.int64)
    lines = [rng.choice(LINES, size=3, replace=False) for _ in BRANDS]
    titles = []
    for c, b in zip(category.tolist(), brand.tolist()):
        vague = VAGUE[names[c][0]]
        noun = vague[rng.integers(len(vague))] if rng.random() < VAGUE_SHARE else names[c][rng.integers(len(names[c]))]
        line = lines[b][rng.integers(3)] + " " if rng.random() < 0.5 else ""
        adj = ADJECTIVES[rng.integers(len(ADJECTIVES))] + " " if rng.random() < 0.7 else ""
        variant = ", " + VARIANTS[rng.integers(len(VARIANTS))] if rng.random() < 0.6 else ""
        titles.append(f"{BRANDS[b]} {line}{adj}{noun}{variant}")
    return titles, category.astype(np.int64), brand, complement.astype(np.int64)


def sample_sessions(category: np.ndarray, complement: np.ndarray, popularity: np.ndarray, *, n_users: int,
                    n_interactions: int, session_length: float, stay: float, to_complement: float,
                    purchase_rate: float, rng: np.random.Generator) -> SyntheticLog:
    """Users with 1-3 interests browse in sessions (module docstring); ``n_interactions`` views, then purchases."""
    n_cat = int(category.max()) + 1
    cat_mass = np.bincount(category, weights=popularity, minlength=n_cat)
    interests = rng.choice(n_cat, size=(n_users, 3), p=cat_mass / cat_mass.sum())
    k = rng.integers(1, 4, n_users)
    activity = rng.lognormal(0.0, 0.8, n_users)
    counts = 2 + rng.multinomial(n_interactions - 2 * n_users, activity / activity.sum())
    user = np.repeat(np.arange(n_users), counts)
    r = user.size
    new_session = np.r_[True, user[1:] != user[:-1]] | (rng.random(r) < 1.0 / session_length)
    session = np.cumsum(new_session) - 1
    pick = (rng.random(int(session[-1]) + 1) * k[user[new_session]]).astype(np.int64)
    interest = interests[user, pick[session]]
    u = rng.random(r)
    target = np.where(u < stay, interest, complement[interest])
    noise = u >= stay + to_complement
    # draw items of each row's target category by popularity
    order = np.lexsort((np.arange(category.size), category))
    cum = np.cumsum(popularity[order])
    start = np.searchsorted(category[order], np.arange(n_cat))
    end = np.r_[start[1:], category.size]
    base = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    mass = cum[end - 1] - base
    x = base[target] + rng.random(r) * mass[target]
    item = order[np.clip(np.searchsorted(cum, x, side="right"), start[target], end[target] - 1)]
    global_cum = np.cumsum(popularity)
    item[noise] = np.minimum(np.searchsorted(global_cum, rng.random(int(noise.sum())) * global_cum[-1]),
                             category.size - 1)
    t = np.arange(r, dtype=np.float64) * 60.0
    buy = rng.random(r) < purchase_rate
    users = np.concatenate([user, user[buy]])
    items = np.concatenate([item, item[buy]])
    times = np.concatenate([t, t[buy] + 30.0])
    events = np.concatenate([np.full(r, "view"), np.full(int(buy.sum()), "purchase")])
    o = np.lexsort((times, users))
    return SyntheticLog(users[o], items[o], events[o], times[o])


def make_world(n_items: int = 4000, *, n_users: int = 8000, n_interactions: int = 155_000,
               popularity_skew: float = 1.0, session_length: float = 5.0, stay: float = 0.7,
               to_complement: float = 0.15, purchase_rate: float = 0.1, seed: int = 0) -> ShopWorld:
    """The shop world of the module docstring (4 000 items, 8 000 users, about 170 000 rows by default).

    Parameters
    ----------
    n_items, n_users : int
    n_interactions : int
        Views; purchases come on top (about ``purchase_rate`` of them).
    popularity_skew : float
        Zipf exponent of item popularity (item ranks are a random permutation).
    session_length : float
        Mean rows per session (one interest per session).
    stay, to_complement : float
        Shares of a session's rows on its interest and on the interest's complement; the rest are any
        item by popularity.
    purchase_rate : float
    seed : int
    """
    rng = np.random.default_rng(seed)
    titles, category, brand, complement = make_items(n_items, rng)
    popularity = (rng.permutation(n_items) + 1.0) ** -popularity_skew
    popularity /= popularity.sum()
    log = sample_sessions(category, complement, popularity, n_users=n_users, n_interactions=n_interactions,
                          session_length=session_length, stay=stay, to_complement=to_complement,
                          purchase_rate=purchase_rate, rng=rng)
    ids = [f"sku-{i:05d}" for i in range(n_items)]
    return ShopWorld(ids, titles, category, complement, brand, popularity, log)


def embed_titles(titles: list[str], *, device: str = "cpu") -> np.ndarray:
    """float32 (N, 384): the titles through reelsim's text model (all-MiniLM-L6-v2, shipped weights)."""
    from reelsim.extractors.registry import load

    return np.asarray(load("text", "minilm-l6-v2", device=device).extract(list(titles)), np.float32)
