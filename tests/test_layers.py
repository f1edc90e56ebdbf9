"""The layer rule, checked on the source: imports flow one way.

reelsim's packages form layers; a module imports only from its own layer or
below (docs/architecture.md)::

    root (errors.py, config.py)  ->  storage/  ->  extractors/  ->  pipeline/  ->  similarity/  ->  jobs/

Imports of reelsim's own modules sit at module top, where a reader sees them
(heavy third-party imports such as torch or faiss may stay inside functions).
No module imports a private (``_name``) name from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"": 0, "storage": 1, "extractors": 2, "pipeline": 3, "similarity": 4, "jobs": 5}
#: modules that may import from any layer, and why
FACADES = {
    "reelsim": "the package's __init__ is the public Python API: it re-exports Config and the errors (explicit "
               "`X as X`) and loads reelsim.run, open_store ... from jobs/ only when first asked for (PEP 562 "
               "__getattr__), so that importing a low module never loads the top layer",
}
#: (importing module, imported module) -> why this import may break the rules
EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("reelsim",) + parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else 0


def source_modules() -> list[Path]:
    skip = {"tests", "benchmarks", "docs", "build", "dist"}
    return sorted(p for p in ROOT.rglob("*.py")
                  if not (set(p.relative_to(ROOT).parts[:-1]) & skip) and not p.relative_to(ROOT).parts[0].startswith("."))


class Imports(ast.NodeVisitor):
    """Every ``reelsim`` import of one module: (line, imported module, names, inside a function)."""

    def __init__(self, module: str, is_package: bool):
        self.module, self.is_package = module, is_package
        self.found: list[tuple[int, str, list[str], bool]] = []
        self._depth = 0

    def _function(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node):
        for a in node.names:
            if a.name == "reelsim" or a.name.startswith("reelsim."):
                self.found.append((node.lineno, a.name, [], self._depth > 0))

    def visit_ImportFrom(self, node):
        if node.level:  # relative import: resolve against this module
            base = self.module.split(".")
            base = base[: len(base) - node.level + (1 if self.is_package else 0)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target == "reelsim" or target.startswith("reelsim."):
            names = [a.name for a in node.names]
            # `from reelsim.pkg import module` imports a module: judge each name as its own target
            for name in names:
                sub = f"{target}.{name}"
                is_module = (ROOT / Path(*sub.split(".")[1:])).with_suffix(".py").is_file() or \
                    (ROOT / Path(*sub.split(".")[1:]) / "__init__.py").is_file()
                self.found.append((node.lineno, sub if is_module else target, [] if is_module else [name],
                                   self._depth > 0))


def all_imports():
    out = []
    for path in source_modules():
        module = module_name(path)
        visitor = Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        out += [(path.relative_to(ROOT).as_posix(), module, *imp) for imp in visitor.found]
    return out


IMPORTS = all_imports()


def test_the_scan_sees_the_package():
    """The checks below read real imports (a scan that found nothing would pass them all)."""
    modules = {m for _, m, *_ in IMPORTS}
    assert {"reelsim.jobs.cli", "reelsim.similarity.search", "reelsim.storage.shards"} <= modules
    assert len(IMPORTS) > 150


@pytest.mark.parametrize("layer", sorted(LAYERS, key=LAYERS.get))
def test_imports_go_only_down_or_sideways(layer):
    bad = [f"{file}:{line} imports {target} (layer {layer_of(target)} > {layer_of(module)})"
           for file, module, line, target, _, _ in IMPORTS
           if layer_of(module) == LAYERS[layer] and layer_of(target) > layer_of(module)
           and (module, target) not in EXCEPTIONS and module not in FACADES]
    assert not bad, "imports that go up a layer:\n" + "\n".join(bad)


def test_own_imports_are_at_module_top():
    bad = [f"{file}:{line} imports {target} inside a function" for file, module, line, target, _, inside in IMPORTS
           if inside and (module, target) not in EXCEPTIONS]
    assert not bad, "reelsim imports hidden inside functions:\n" + "\n".join(bad)


def test_no_private_names_cross_modules():
    bad = [f"{file}:{line} imports {name} from {target}" for file, module, line, target, names, _ in IMPORTS
           for name in names if name.startswith("_") and not name.startswith("__") and target != module]
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def test_every_exception_is_used_and_explained():
    used = {(m, t) for _, m, _, t, _, _ in IMPORTS}
    for pair, why in EXCEPTIONS.items():
        assert pair in used, f"stale exception {pair}"
        assert len(why) > 40, f"exception {pair} needs a reason"
    importers = {m for _, m, *_ in IMPORTS}
    for module, why in FACADES.items():
        assert module in importers and len(why) > 40, f"facade {module}: unused or unexplained"


def test_importing_reelsim_does_no_heavy_work():
    """``import reelsim`` (the API, the CLI) loads no torch, faiss, dask, h5py, pyarrow, PyAV or librosa."""
    import subprocess
    import sys

    code = ("import sys, reelsim, reelsim.jobs.cli; heavy = ('torch', 'faiss', 'dask', 'distributed', 'h5py', "
            "'pyarrow', 'av', 'librosa', 'cv2', 'sentence_transformers'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import reelsim loaded: {out}"


def test_layer_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a storage module importing similarity is reported."""
    visitor = Imports("reelsim.storage.fake", False)
    visitor.visit(ast.parse("def f():\n    from reelsim.similarity.search import search\n"))
    (line, target, names, inside), = visitor.found
    assert (target, names, inside) == ("reelsim.similarity.search", ["search"], True)
    assert layer_of(target) > layer_of("reelsim.storage.fake")


def test_scripts_import_only_names_that_exist():
    """Benchmarks and tests import reelsim names that exist (a rename must not leave a script behind).

    Reads each file's ``from reelsim.X import name`` statements (in functions too), imports ``reelsim.X``
    and checks ``name`` on it; importing reelsim's modules is cheap (no heavy work at import time).
    """
    import importlib

    scripts = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "tests").glob("*.py"))
    missing, checked = [], 0
    for path in scripts:
        visitor = Imports("script", False)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for line, target, names, _ in visitor.found:
            try:
                module = importlib.import_module(target)
            except ImportError as e:
                missing.append(f"{path.relative_to(ROOT)}:{line} imports {target}: {e}")
                continue
            missing += [f"{path.relative_to(ROOT)}:{line} imports {name} from {target}: no such name"
                        for name in names if not hasattr(module, name)]
            checked += 1
    assert checked > 100, checked  # the scan reads real imports
    assert not missing, "\n".join(missing)


def jobs_modules_loaded(modules: list[str]) -> list[str]:
    """The ``reelsim.jobs`` modules in ``sys.modules`` after importing ``modules`` in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(','.join(sorted(m for m in sys.modules if m == 'reelsim.jobs' or m.startswith('reelsim.jobs.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    return out.split(",") if out else []


def test_importing_a_module_below_jobs_loads_no_jobs_module():
    """The package root is lazy: importing ``reelsim`` or any module of the layers below ``jobs/`` (which runs
    the root's ``__init__`` first) loads no ``reelsim.jobs`` module, so the layer rule holds at run time too.

    All of them are imported in one interpreter (fast); on a failure each is tried alone to name the culprits.
    """
    below = ["reelsim"] + [module_name(p) for p in source_modules() if layer_of(module_name(p)) < LAYERS["jobs"]]
    assert len(below) > 60 and "reelsim.storage.layout" in below and "reelsim.similarity.rebuild" in below
    loaded = jobs_modules_loaded(below)
    if loaded:
        culprits = {m: jobs_modules_loaded([m]) for m in below}
        pytest.fail("importing these loads jobs modules: " + "; ".join(
            f"{m} -> {', '.join(j)}" for m, j in culprits.items() if j))


def test_the_lazy_root_still_gives_the_whole_api():
    """``reelsim.run``, ``reelsim.open_store`` ... resolve on first use (and ``dir(reelsim)`` lists them)."""
    import reelsim
    from reelsim.jobs.api import open_store, run
    from reelsim.storage.lists import Neighbor

    assert reelsim.run is run and reelsim.open_store is open_store and reelsim.Neighbor is Neighbor
    assert set(reelsim.__all__) <= set(dir(reelsim))
    assert all(getattr(reelsim, name) is not None for name in reelsim.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        reelsim.nope  # noqa: B018


def test_layers_below_jobs_never_print():
    """Libraries report, never print: below ``jobs/`` no module calls ``print``, writes to ``sys.stdout`` or
    ``sys.stderr``, or draws a tqdm bar; they hand :class:`reelsim.reporting.Report` values to a ``progress``
    callback instead (the CLI decides what a person sees)."""
    bad = []
    for path in source_modules():
        module = module_name(path)
        if layer_of(module) >= LAYERS["jobs"] or module == "reelsim":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{where} calls print")
            elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                bad.append(f"{where} uses sys.{node.attr}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                    (getattr(node, "module", None) or a.name).split(".")[0] == "tqdm" for a in node.names):
                bad.append(f"{where} imports tqdm")
    assert not bad, "\n".join(bad)
