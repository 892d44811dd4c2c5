"""The README's architecture table matches the package one to one: a row per folder and top-level module of
collector/ (and the simulator package), and every module of a folder named in its row."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| folder | job |"):]
    table = table[:table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


def _parts() -> set[str]:
    pkg = ROOT / "collector"
    folders = {f"collector/{p.name}/" for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {f"collector/{p.name}" for p in pkg.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    return folders | modules | {"exchange_sim/"}


def test_a_row_per_folder_and_module() -> None:
    assert set(_rows()) == _parts()


def test_every_module_of_a_folder_is_named_in_its_row() -> None:
    for folder, job in _rows().items():
        if not folder.startswith("collector/") or not folder.endswith("/"):
            continue
        named = set(re.findall(r"`([a-z_/.]+)`", job))
        modules = {p.stem for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        subpackages = {p.name for p in (ROOT / folder).iterdir() if (p / "__init__.py").exists()}
        missing = {m for m in modules | subpackages
                   if not any(n == m or n.startswith(f"{m}/") or n.endswith(f"/{m}") for n in named)}
        assert not missing, f"README's row for {folder} does not name {sorted(missing)}"
