"""The README's facade example runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_facade_example_prints_what_it_claims() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Ten lines of the facade", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.group(1), str(README), "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0] == "1 ['charged', 'not_verified', 'charged']"
    assert lines[1].startswith("Balance(email=23999, mobile=1599,")


def code_lines(section: str) -> int:
    """Lines of code (not blank) in a README section's code blocks."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", section, re.S)
    return sum(1 for block in blocks for line in block.splitlines() if line.strip())


def test_checking_an_adapter_and_a_service_each_take_under_twenty_lines_of_code() -> None:
    text = README.read_text(encoding="utf-8")
    for heading in ("## Check your own adapter\n", "## Check your own service\n"):
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        assert 0 < code_lines(section) < 20, heading
