"""Every module of ``src/drcl`` with behaviour of its own is imported by some test.

A module counts as imported when a test imports it, or imports a name defined in it through its
package (``from drcl.transforms import random_patch_mask``). Command-line modules (``cli/``,
``*/cli.py``, ``__main__``) are argument parsers driven through ``drcl.cli.main.main`` by the
CLI tests. :data:`NOT_YET` may list a module still reached only end to end; it may only shrink.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, TESTS = ROOT / "src" / "drcl", ROOT / "tests"

# Modules reached only through end-to-end runs (none left): a module listed here needs a test of
# its own, then leaves the list.
NOT_YET: set[str] = set()


def _is_cli(module: str) -> bool:
    parts = module.split(".")
    return parts[1] == "cli" or parts[-1] in ("cli", "__main__")


def source_modules() -> set[str]:
    """Dotted names of the modules of ``src/drcl`` (packages' ``__init__`` left out)."""
    return {
        ".".join(p.relative_to(SRC.parent).with_suffix("").parts)
        for p in SRC.rglob("*.py")
        if p.name != "__init__.py"
    }


def modules_tests_import() -> set[str]:
    """Modules the tests import, directly or through a package's re-exported names."""
    seen: set[str] = set()
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                seen |= {a.name for a in node.names if a.name.startswith("drcl")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drcl"):
                seen.add(node.module)
                package = importlib.import_module(node.module)
                for alias in node.names:
                    seen.add(f"{node.module}.{alias.name}")
                    defined_in = getattr(getattr(package, alias.name, None), "__module__", None)
                    seen.add(defined_in or "")
    return seen


def test_every_module_with_behaviour_is_imported_by_a_test():
    untested = {m for m in source_modules() - modules_tests_import() if not _is_cli(m)}
    assert untested <= NOT_YET, f"modules no test imports: {sorted(untested - NOT_YET)}"
    assert not NOT_YET - untested, f"tested now, remove from NOT_YET: {sorted(NOT_YET - untested)}"
