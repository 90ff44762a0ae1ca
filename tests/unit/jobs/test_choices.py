"""The CLI's ``click.Choice`` lists come from the library's enums, never typed out again."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[3]


def _string_enums() -> dict[frozenset[str], str]:
    """Values of every ``class X(str, Enum)`` under pipeline/ and retinanet/ -> ``module.X``."""
    enums: dict[frozenset[str], str] = {}
    for package in ("pipeline", "retinanet"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id.endswith("Enum") for b in node.bases
                ):
                    found = {
                        s.value.value
                        for s in node.body
                        if isinstance(s, ast.Assign)
                        and isinstance(s.value, ast.Constant)
                        and isinstance(s.value.value, str)
                    }
                    if found:
                        enums[frozenset(found)] = f"{path.relative_to(ROOT)}:{node.name}"
    return enums


def _literal_strings(node: ast.expr) -> frozenset[str] | None:
    if isinstance(node, ast.List | ast.Tuple) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return frozenset(e.value for e in node.elts)  # type: ignore[attr-defined]
    return None


def test_no_choice_list_copies_an_enum() -> None:
    enums = _string_enums()
    copies = []
    for path in sorted((ROOT / "jobs").rglob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {  # NAME = ("a", "b") at module level, as PRECISIONS was
            t.id: _literal_strings(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Choice" and node.args:
                arg = node.args[0]
                values = constants.get(arg.id) if isinstance(arg, ast.Name) else _literal_strings(arg)
                if values in enums:
                    copies.append(f"{path.relative_to(ROOT)}:{node.lineno} copies {enums[values]}")
        for name, values in constants.items():
            if values in enums:
                copies.append(f"{path.relative_to(ROOT)}: {name} copies {enums[values]}")
    assert copies == []


def _choices(command: click.Command, flag: str) -> tuple[str, ...]:
    (param,) = [p for p in command.params if flag in getattr(p, "opts", ())]
    assert isinstance(param.type, click.Choice)
    return tuple(param.type.choices)


def test_merge_and_precision_offer_the_enums_values() -> None:
    from jobs.detect import detect_command
    from pipeline.detection import Precision
    from pipeline.merging import MergeConfig, MergeStrategy

    assert _choices(detect_command, "--merge") == tuple(s.value for s in MergeStrategy)
    assert _choices(detect_command, "--precision") == tuple(p.value for p in Precision)
    edge = MergeConfig(strategy="edge")  # type: ignore[arg-type]  # the strings still work
    assert edge.strategy is MergeStrategy.EDGE


def test_cli_import_loads_no_numpy() -> None:
    """The choices come from ``pipeline.choices``, so ``aerialdet --help`` stays light."""
    code = "import sys, jobs.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    assert not loaded & {"numpy", "rasterio", "torch", "pipeline.detection", "pipeline.merging"}
