"""The packages of ``src/drcl`` form a layered graph: no import cycle between packages."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "drcl"


@functools.cache  # parsed once per session: every parametrized case reads the same graph
def package_graph(root: Path = SRC) -> dict[str, set[str]]:
    """``{package: packages it imports}`` from every ``import drcl.X...`` / ``from drcl.X ...``
    in ``root`` (lazy imports inside functions count too: they are dependencies all the same)."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if len(parts) == 1:  # drcl/__init__.py
            continue
        pkg = parts[0]
        deps = graph.setdefault(pkg, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                bits = name.split(".")
                if bits[0] == "drcl" and len(bits) > 1 and bits[1] != pkg:
                    deps.add(bits[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def module_graph(root: Path = SRC) -> dict[str, set[str]]:
    """``{module: drcl modules it imports}``, lazy imports inside functions included (they run
    too, and a circle through them is a web all the same). ``from drcl.a import b`` points at
    module ``drcl.a.b`` when it is one, else at ``drcl.a``."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        deps = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            targets = {resolve(n) for n in names if n.split(".")[0] == "drcl"}
            deps |= {t for t in targets if t is not None and t != mod}
    return graph


def test_module_graph_sees_a_lazy_circle(tmp_path):
    pkg = tmp_path / "drcl" / "p"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from drcl.p.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from drcl.p import a\n")
    graph = module_graph(tmp_path / "drcl")
    assert graph["drcl.p.a"] == {"drcl.p.b"} and graph["drcl.p.b"] == {"drcl.p.a"}
    assert find_cycle(graph) == ["drcl.p.a", "drcl.p.b", "drcl.p.a"]


def test_no_import_circle_between_modules():
    graph = module_graph()
    assert {"drcl.pretrain.runner", "drcl.engine.trainer"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"module import circle: {' -> '.join(cycle)}"


def test_find_cycle_sees_a_cycle_and_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({}) is None


def test_no_import_cycle_between_packages():
    graph = package_graph()
    assert {"engine", "pretrain", "finetune", "data", "cli"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"package import cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize(
    "low, high",
    [
        ("engine", "pretrain"),
        ("engine", "finetune"),
        ("engine", "data"),
        ("data", "proposals"),
        ("detection", "finetune"),
        ("models", "pretrain"),
        ("config", "engine"),
    ],
)
def test_lower_layers_do_not_import_higher_ones(low, high):
    assert high not in package_graph()[low], f"drcl.{low} imports drcl.{high}"


# The files of a stage that may read the root config: its job (``from_config``), its runner and
# its command line.
STAGE_FILES = ("job.py", "runner.py", "cli.py")


def _reads_root_config(path: Path) -> bool:
    text = path.read_text()
    if "cfg: Any" in text:
        return True
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drcl.config"):
            if any(a.name == "Config" for a in node.names):
                return True
    return False


def test_only_runners_and_cli_read_the_root_config():
    """Below the runners, functions take config sections or keyword arguments: the root
    ``Config`` (and ``cfg: Any``) appears only in ``*/job.py`` (a stage's ``from_config``),
    ``*/runner.py``, ``*/cli.py``, ``cli/`` and ``config/``."""
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] not in ("cli", "config")
        and path.name not in STAGE_FILES
        and _reads_root_config(path)
    ]
    assert not offenders, offenders


def _untyped_cfg_params(path: Path) -> list[str]:
    """``function(cfg)`` parameters named ``cfg`` / ``config`` whose annotation is missing or is
    the root ``Config``: a section type (``ModelConfig``, ``DRBConfig``, ...) is what belongs
    below the runners."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                ann = ast.unparse(arg.annotation) if arg.annotation else None
                if arg.arg in ("cfg", "config") and ann in (None, "Config", "Any"):
                    found.append(f"{node.name}({arg.arg}: {ann})")
    return found


def test_untyped_cfg_params_are_seen(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def a(cfg): ...\ndef b(cfg: Config): ...\ndef c(cfg: ViewConfig): ...\n")
    assert _untyped_cfg_params(src) == ["a(cfg: None)", "b(cfg: Config)"]


def test_no_root_config_parameter_below_the_runners():
    """No constructor below a runner takes the root config, typed or not (the import check above
    cannot see an unannotated ``cfg``)."""
    offenders = {
        str(path.relative_to(SRC)): bad
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] not in ("cli", "config")
        and path.name not in STAGE_FILES
        and (bad := _untyped_cfg_params(path))
    }
    assert not offenders, offenders


# The functions outside config/ that still take the root Config (issue 21: each stage is to
# read it in one ``from_config`` only). A function may leave this list, none may join it.
ROOT_CONFIG_READERS = {
    "analysis/job.py": {"from_config"},
    "finetune/job.py": {"from_config"},
    "predict/runner.py": {"from_config"},
    "pretrain/job.py": {"from_config"},
    "proposals/job.py": {"from_config"},
}


def _root_config_functions(root: Path = SRC) -> dict[str, set[str]]:
    """``{file: functions with a parameter annotated Config (or an unannotated cfg)}``."""
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if rel.parts[0] in ("config", "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                anns = [(a.arg, ast.unparse(a.annotation) if a.annotation else None) for a in args]
                if any(ann == "Config" or (n == "cfg" and ann is None) for n, ann in anns):
                    found.setdefault(rel.as_posix(), set()).add(node.name)
    return found


def test_no_new_function_takes_the_root_config():
    found = _root_config_functions()
    new = {f: sorted(names - ROOT_CONFIG_READERS.get(f, set())) for f, names in found.items()}
    assert not {f: n for f, n in new.items() if n}, f"new root-Config readers: {new}"
    gone = {f: sorted(n - found.get(f, set())) for f, n in ROOT_CONFIG_READERS.items()}
    assert not {f: n for f, n in gone.items() if n}, f"no longer root-Config readers: {gone}"


def test_root_config_functions_are_seen(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "runner.py").write_text(
        "def a(cfg: Config): ...\ndef b(cfg): ...\ndef c(data: DataConfig): ...\n"
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "loader.py").write_text("def d(cfg: Config): ...\n")
    assert _root_config_functions(tmp_path) == {"x/runner.py": {"a", "b"}}
