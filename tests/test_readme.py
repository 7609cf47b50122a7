"""The README's Python snippets run as written, in order, in one namespace (as a reader
pasting them into one session would)."""
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
    namespace: dict = {}
    for block in BLOCKS:
        if any(word in block for word in SLOW):
            continue
        exec(compile(block, str(README), "exec"), namespace)
    res = namespace["res"]
    assert res.synergy.shape == ()  # the last snippet's result: one problem, torch, with a gradient
    assert namespace["logits1"].grad is not None


@pytest.mark.slow
def test_readme_avdigits_snippet_runs():
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    namespace: dict = {}
    for block in BLOCKS:
        if any(word in block for word in SLOW):
            exec(compile(block, str(README), "exec"), namespace)
