"""Text search over a store: a fresh call per query (the CLI's path) against a kept reader (the service's path).

    python benchmarks/search.py STORE        # e.g. the 10^5 store benchmarks/serve.py builds

Prints the median seconds per query of each and their ratio (both in this run).
"""

import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI sets it: spinning threads cost 40x under load

from reelsim.similarity.answer import StoreReader  # noqa: E402
from reelsim.similarity.textsearch import search  # noqa: E402

store = sys.argv[1]
queries = ["wireless headphones", "fresh fruit", "garden tools", "kitchen knife", "running shoes"]
fresh = []
for q in queries[:3]:
    t = time.perf_counter(); search(store, q, 10); fresh.append(time.perf_counter() - t)
reader = StoreReader(store)
search(store, queries[0], 10, reader=reader)  # warm: the version's catalog is read once
kept = []
for q in queries * 4:
    t = time.perf_counter(); search(store, q, 10, reader=reader); kept.append(time.perf_counter() - t)
print(f"fresh per query: median {statistics.median(fresh):.3f} s; kept reader: median {statistics.median(kept)*1e3:.1f} ms; ratio {statistics.median(fresh)/statistics.median(kept):.0f}x")
