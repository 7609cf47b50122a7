"""The README's Python snippets run as written, each on its own (as a reader pasting one of
them into a fresh session would; they needed the first one's imports)."""
from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
# Generating AV-digits needs espeak-ng and minutes of synthesis: the slow suite runs it.
SLOW = ("avdigits",)


def test_readme_has_snippets():
    assert len(BLOCKS) >= 3


def test_readme_snippets_run(capsys):
    spaces = []
    for block in BLOCKS:
        if any(word in block for word in SLOW):
            continue
        spaces.append({})
        exec(compile(block, str(README), "exec"), spaces[-1])
    soft = next(space for space in spaces if "logits1" in space)
    assert soft["res"].synergy.shape == ()  # one problem, torch, with a gradient
    assert soft["logits1"].grad is not None
    assert spaces[-1]["est"].cells == 20 * 20 * 10


@pytest.mark.slow
def test_readme_avdigits_snippet_runs():
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    for block in BLOCKS:
        if any(word in block for word in SLOW):
            exec(compile(block, str(README), "exec"), {})
