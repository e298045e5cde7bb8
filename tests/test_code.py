"""The package's shape, which a newcomer reads before its numbers: short functions, a CLI module that
fits a screenful of scrolling, docstrings without benchmark figures, and no file named outside it."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vaestudy"


def _functions():
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.name, node


def test_no_function_in_the_package_is_over_80_lines():
    lines = {f"{name}:{fn.name}": fn.end_lineno - fn.lineno + 1 for name, fn in _functions()}
    assert lines["cli.py:build_parser"] > 10  # the count sees the functions
    assert not {name: n for name, n in lines.items() if n > 80}


def test_the_command_line_module_is_under_500_lines():
    assert len((PACKAGE / "cli.py").read_text().splitlines()) < 500


def test_docstrings_and_comments_carry_no_timings_or_processor_names():
    """Measurements belong in docs/performance.md: no seconds, speed-ups or processor models in code."""
    pattern = re.compile(
        r"\b(EPYC|Xeon|Zen ?\d|H100|microseconds?|GFLOP/s|images/s on|\d+(\.\d+)? ?times faster|\d+(\.\d+)? ?ms a step)\b"
    )
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


def test_the_package_names_no_file_outside_the_repository():
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text()
        assert "STUDY.md" not in text and "../shared" not in text, path.name
