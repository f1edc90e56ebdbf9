"""The driver's rules as pure functions: where each stage runs, the retry rule, attempt counting, the timeout clock."""

from __future__ import annotations

from reelsim.config import Config
from reelsim.jobs.driver import declare_stages, retry
from reelsim.jobs.tasks import embed_task, finish_task, mixes_items, prepare_task
from reelsim.jobs.watch import ItemWatch


def test_the_stages_are_declared_once_with_their_resources():
    cfg = Config().with_settings(["jobs.gpu_batch=128", "jobs.group_size=16", "models.device=cpu"])
    cpu = declare_stages(cfg, {})  # a CPU cluster: any worker takes any task; each prepared group embedded alone
    assert [(s.name, s.task, s.resources, s.batch) for s in cpu.values()] == [
        ("prepare", prepare_task, None, 16), ("embed", embed_task, None, 1), ("finish", finish_task, None, 1)]
    assert declare_stages(cfg.with_settings(["jobs.cross_item=on"]), {})["embed"].batch == 128
    gpu = declare_stages(cfg, {"GPU": ["tcp://g:1"], "DECODE": ["tcp://c:1", "tcp://c:2"]})
    assert {n: s.resources for n, s in gpu.items()} == {"prepare": {"DECODE": 1}, "embed": {"GPU": 1},
                                                        "finish": {"DECODE": 1}}
    assert gpu["embed"].batch == 128  # GPU workers: batches of many items
    assert gpu["finish"].priority > gpu["embed"].priority > gpu["prepare"].priority  # written before prepared


def test_one_retry_rule_for_every_stage():
    for stage in ("prepare", "embed", "finish"):
        for cause in ("died", "error", "timeout"):
            assert retry(stage, 1, cause) == "fail"  # one unit: its items fail, with the reason
    assert retry("prepare", 5, "died") == retry("prepare", 5, "timeout") == retry("embed", 3, "error") == "split"
    assert retry("embed", 3, "timeout") == "fail"  # its groups alone would take as long again


def test_items_share_forward_passes_on_cuda_only_unless_asked():
    auto, on, off = (Config().with_settings([f"jobs.cross_item={m}"]) for m in ("auto", "on", "off"))
    assert not mixes_items(auto, "cpu") and mixes_items(auto, "cuda:0")
    assert mixes_items(on, "cpu") and not mixes_items(off, "cuda")


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
    w.pause("x")  # prepared: the clock stops, the attempts are kept
    assert w.overdue(timeout_s=5, now=1e6) == [] and w.attempts("x") == 2
    w.on_event(event("x", worker="tcp://c:3"), now=300.0)  # run again (its prepared data was lost): counted
    assert w.attempts("x") == 3 and w.overdue(timeout_s=5, now=306.0) == [("x", "tcp://c:3", 6.0)]
    w.finish("x")
    assert w.overdue(timeout_s=5, now=1e9) == [] and w.attempts("never") == 0
