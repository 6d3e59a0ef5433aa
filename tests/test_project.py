"""The project's own promises: the README opens with the two set-up commands and CI runs the second."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "README must open with a bash block of set-up commands"
    after_title = text.split("\n", 1)[1].lstrip()
    assert after_title.startswith(block.group(0)), "the set-up block must come right after the title"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_setup_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert all(c.startswith("bash scripts/setup.sh && ") for c in cmds)
    assert "handanno demo" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def test_cli_help_lists_every_command():
    """``python -m handanno.cli --help`` lists every command the console script has (the ``__main__``
    call used to stand above ``demo``, which was then missing from it)."""
    from handanno.cli import main

    out = subprocess.run([sys.executable, "-m", "handanno.cli", "--help"], capture_output=True, text=True, check=True)
    listed = out.stdout.split("Commands:")[1].split()
    assert set(main.commands) >= {"calibrate", "demo", "export", "fit", "synth", "train"}
    for name in main.commands:
        assert name in listed, name


def test_code_passes_the_linter():
    """ruff (the `test` extra) finds nothing in the package, tests and benchmarks (pyproject's rules)."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.is_file():
        import pytest

        pytest.skip("ruff is not installed beside this Python (pip install -e .[test])")
    res = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
