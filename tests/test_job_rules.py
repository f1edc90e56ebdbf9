"""The runner's rules as pure functions: GPU routing, attempt counting, the timeout clock."""

from __future__ import annotations

from reelsim.config import Config
from reelsim.jobs.runner import item_resources
from reelsim.jobs.watch import ItemWatch
from reelsim.storage.manifest import Item

VIDEO, PRODUCT = Item(id="v", video="/m/v.mp4"), Item(id="p", image="/m/p.png", title="shoe")


def test_gpu_routing_rule():
    cfg = Config()
    assert item_resources(VIDEO, cfg, gpu_cluster=False) is None
    assert item_resources(VIDEO, cfg, gpu_cluster=True) == {"GPU": 1}
    assert item_resources(PRODUCT, cfg, gpu_cluster=True) is None
    cuda = cfg.with_overrides(models={"device": "cuda"})
    assert item_resources(PRODUCT, cuda, gpu_cluster=True) == {"GPU": 1}


def event(item, phase="start", run="r", worker="tcp://a:1"):
    return (0.0, {"run": run, "item": item, "phase": phase, "worker": worker})


def test_attempts_and_the_timeout_clock():
    w = ItemWatch("r")
    w.on_event(event("x"), now=0.0)
    w.on_event(event("x", run="another-run"), now=0.0)  # another run on the same cluster: ignored
    w.on_event(event("x", phase="loading-models"), now=1.0)
    assert w.overdue(timeout_s=5, now=100.0) == []  # loading models does not count
    w.on_event(event("x", phase="models-loaded"), now=100.0)
    assert w.overdue(timeout_s=5, now=104.0) == []
    assert w.overdue(timeout_s=5, now=106.0) == [("x", "tcp://a:1", 6.0)]
    assert w.overdue(timeout_s=0, now=1e9) == []  # 0 = no limit
    w.on_event(event("x", worker="tcp://b:2"), now=200.0)  # its worker died: a second attempt elsewhere
    assert w.attempts("x") == 2 and w.overdue(timeout_s=5, now=204.0) == []
    w.finish("x")
    assert w.overdue(timeout_s=5, now=1e9) == [] and w.attempts("never") == 0
