"""ftbench's layers and the one way its imports point; one definition of each constant.

The import graph is read from the AST of every module of ftbench (imports inside functions count:
they run too), never by importing anything. The layers, lowest first, and what each may import
besides its own layer (transitively):

    base      atomic, errors, schema (the config's defaults and the matrix's axes), hub, metrics,
              flops, provenance, checkpoint_files, launch, torchrun_worker: nothing of ftbench
    data      ftbench.data (the common format, synthetic data, converters): base
    config    config, cluster (the matrix, planned by the Snakefile): data, base; never torch
    models    ftbench.models (the model, its processor, tokenizers, loading): data, base
    training  ftbench.training (the parts of a cell's training): models and below
    jobs      train, evaluate, pretrain, speed, speed_inputs, export: training and below
    report    report, plots, tables_html (pure functions of the results): config and below; never torch
    cli       cli: anything

The workflow points one way too: Snakefile and rules/*.smk -> workflow_scripts (run as jobs) ->
ftbench; ftbench imports neither workflow_scripts nor scripts, and the workflow plans with the
torch-free layers only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # layer: (its modules (a package stands for all of its modules), the layers right below it)
    "base": (("ftbench", "ftbench.atomic", "ftbench.errors", "ftbench.schema", "ftbench.hub", "ftbench.metrics",
              "ftbench.flops", "ftbench.provenance", "ftbench.checkpoint_files", "ftbench.launch",
              "ftbench.torchrun_worker"), ()),
    "data": (("ftbench.data",), ("base",)),
    "config": (("ftbench.config", "ftbench.cluster"), ("data",)),
    "models": (("ftbench.models",), ("data",)),
    "training": (("ftbench.training",), ("models",)),
    "jobs": (("ftbench.train", "ftbench.evaluate", "ftbench.pretrain", "ftbench.speed", "ftbench.speed_inputs",
              "ftbench.export"), ("training",)),
    "report": (("ftbench.report", "ftbench.plots", "ftbench.tables_html"), ("config",)),
    "cli": (("ftbench.cli",), ("jobs", "report")),
}
# Layers the Snakefile may import while planning hundreds of jobs in a second, and that the README's
# tables regenerate with: no torch (nor anything that imports it) in them.
TORCH_FREE = ("base", "data", "config", "report")
HEAVY = ("torch", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes", "flash_attn", "torchvision")
# Within a package, modules in this order import only those before them (ftbench/training/__init__.py).
PACKAGE_ORDER = {
    "ftbench.training": ("settings", "distributed", "strategies", "data", "engines", "checkpoint"),
}


def modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of ftbench by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((root / "ftbench").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported_names(path: Path, name: str) -> set[str]:
    """The dotted names ``path`` (module ``name``) imports, anywhere in it, relative ones resolved;
    ``from X import y`` names ``X.y`` as well as ``X`` (``y`` may be a module)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> the ftbench modules it imports."""
    mods = modules(root)
    return {name: {m for m in imported_names(path, name) if m in mods and m != name} for name, path in mods.items()}


def layer_of(module: str) -> str | None:
    """The layer of ``module`` (a member of a package is in the package's layer)."""
    for layer, (members, _) in LAYERS.items():
        if any(module == m or (m != "ftbench" and module.startswith(m + ".")) for m in members):
            return layer
    return None


def below(layer: str) -> set[str]:
    """The layers under ``layer``, transitively."""
    under, todo = set(), list(LAYERS[layer][1])
    while todo:
        lower = todo.pop()
        if lower not in under:
            under.add(lower)
            todo.extend(LAYERS[lower][1])
    return under


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def unit_of(module: str) -> str:
    """The package a module belongs to (``ftbench.data``, ...), or the top-level module itself."""
    return ".".join(module.split(".")[:2])


# ---------------------------------------------------------------------------------------------
# the layers


def test_the_layers_are_a_hierarchy():
    found = cycle({layer: set(lower) for layer, (_, lower) in LAYERS.items()})
    assert found is None, "layer cycle: " + " -> ".join(found)
    for layer in TORCH_FREE:
        assert below(layer) <= set(TORCH_FREE), layer


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer_of(m) is None] == [], "add the new module to a layer in LAYERS"


def test_no_module_imports_a_higher_layer():
    graph = import_graph()
    wrong = []
    for module, imported in sorted(graph.items()):
        layer = layer_of(module)
        for target in sorted(imported):
            target_layer = layer_of(target)
            if None not in (layer, target_layer) and target_layer != layer and target_layer not in below(layer):
                wrong.append(f"{module} ({layer}) imports {target} ({target_layer})")
    assert wrong == []


def test_no_import_cycle_between_modules():
    found = cycle(import_graph())
    assert found is None, "import cycle: " + " -> ".join(found)


def test_no_import_cycle_between_packages():
    """ftbench.data, ftbench.models, ftbench.training and the top-level modules, each taken whole."""
    units: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        units.setdefault(unit_of(module), set()).update(unit_of(m) for m in imported if unit_of(m) != unit_of(module))
    found = cycle(units)
    assert found is None, "import cycle: " + " -> ".join(found)


def test_modules_of_a_package_import_only_the_ones_before_them():
    graph = import_graph()
    for package, order in PACKAGE_ORDER.items():
        for i, name in enumerate(order):
            inside = {m.removeprefix(package + ".") for m in graph[f"{package}.{name}"] if m.startswith(package + ".")}
            assert inside <= set(order[:i]), f"{package}.{name} imports {sorted(inside - set(order[:i]))}"


def test_torch_free_layers_never_import_torch():
    heavy = []
    for module, path in modules().items():
        if layer_of(module) in TORCH_FREE:
            heavy += [f"{module} imports {name}" for name in sorted(imported_names(path, module))
                      if name.split(".")[0] in HEAVY]
    assert heavy == []


# ---------------------------------------------------------------------------------------------
# the workflow: Snakefile, rules -> workflow_scripts -> ftbench


def test_ftbench_never_imports_the_scripts():
    outside = ("workflow_scripts", "scripts", "tests")
    found = [f"{module} imports {name}" for module, path in modules().items()
             for name in sorted(imported_names(path, module)) if name.split(".")[0] in outside]
    assert found == []


def test_workflow_scripts_import_only_ftbench():
    """A workflow script is a job's entry point: it reads ftbench, never another script."""
    local = {p.stem for p in (REPO / "workflow_scripts").glob("*.py")} | {"workflow_scripts", "scripts", "tests"}
    for path in sorted((REPO / "workflow_scripts").glob("*.py")):
        found = {name.split(".")[0] for name in imported_names(path, f"workflow_scripts.{path.stem}")}
        assert not found & local, f"{path.name} imports {sorted(found & local)}"


def test_the_workflow_plans_with_torch_free_layers_only():
    pattern = re.compile(r"^\s*(?:from|import)\s+(ftbench[\w.]*)", re.MULTILINE)
    files = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    imported = {m for path in files for m in pattern.findall(path.read_text())}
    assert imported, "no ftbench import found in the workflow files"
    mods = modules()
    for module in sorted(imported):
        assert module in mods, f"the workflow imports {module}, not a module of ftbench"
        assert layer_of(module) in TORCH_FREE, f"the workflow imports {module} ({layer_of(module)})"


# ---------------------------------------------------------------------------------------------
# one definition per name

# Equal values that are two things: the checkpoint's manifest and a conversion's manifest share a
# file name; each converter of a task names its task.
SAME_VALUE_ALLOWED = {"'manifest.json'", "'docvqa'"}


def module_constants(path: Path):
    """``(name, value)`` of the module-level assignments of ``path`` to literals (and compiled regexes)."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if not names:
            continue
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "compile"
                and value.args and isinstance(value.args[0], ast.Constant)):
            yield names[0], ("regex", value.args[0].value)
            continue
        try:
            yield names[0], ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError):  # not a literal
            continue


def test_a_constant_is_defined_once():
    """No two modules define the same list of names, pattern or file name (or one NAME to one value):
    the second one imports it."""
    by_value: dict[str, set[tuple[str, str]]] = {}
    for module, path in modules().items():
        for name, value in module_constants(path):
            trivial = isinstance(value, (bool, int, float, type(None))) or (isinstance(value, str) and len(value) < 6)
            if not trivial:
                by_value.setdefault(repr(value), set()).add((module, name))
            if name.isupper() and trivial and value is not None:
                by_value.setdefault(f"{name} = {value!r}", set()).add((module, name))
    twice = {value: sorted(where) for value, where in by_value.items()
             if len({m for m, _ in where}) > 1 and value not in SAME_VALUE_ALLOWED}
    assert twice == {}
