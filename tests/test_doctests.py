"""Every ``Examples`` section of reelsim's docstrings runs, as written (examples that need a store or a
video file say ``# doctest: +SKIP``)."""

from __future__ import annotations

import doctest
import importlib
import io

import pytest
from test_layers import module_name, source_modules

MODULES = [module_name(p) for p in source_modules()]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def run_examples(module: str) -> tuple[int, int, str]:
    """(examples attempted, failed, doctest's report) of one module's docstrings."""
    mod = importlib.import_module(module)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out = io.StringIO()
    for test in doctest.DocTestFinder(exclude_empty=True).find(mod, module):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    return result.attempted, result.failed, out.getvalue()


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    attempted, failed, text = run_examples(module)
    assert failed == 0, f"{failed} of {attempted} examples in {module} failed:\n{text}"


def test_the_examples_are_found():
    """The runner sees the package's examples (a finder that found none would pass every test above)."""
    assert len(MODULES) > 80
    assert sum(run_examples(m)[0] for m in ("reelsim.config", "reelsim.storage.layout", "reelsim.similarity.fusion",
                                            "reelsim.jobs.runner")) >= 25
