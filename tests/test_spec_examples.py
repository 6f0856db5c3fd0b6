"""Execute every ```python block of every spec/*.md chapter, so the text cannot drift from the code.

Blocks are run in order in one namespace per chapter. A block with ``>>>`` prompts is a doctest
(its printed output must match; ELLIPSIS and NORMALIZE_WHITESPACE are on); a block without prompts
is executed as plain code (it may assert).
"""
import doctest
import pathlib
import re

import numpy as np
import pytest

SPEC = pathlib.Path(__file__).resolve().parent.parent / "spec"
CHAPTERS = sorted(SPEC.glob("*.md"))
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def python_blocks(path: pathlib.Path):
    """(line number, source) of each ```python block."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in BLOCK.finditer(text)]


def test_block_extraction_finds_prompts_and_plain_code(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n```python\n>>> 1 + 1\n2\n\n```\nmore\n```python\nx = 3\n```\n```sh\nls\n```\n")
    assert python_blocks(md) == [(3, ">>> 1 + 1\n2\n\n"), (9, "x = 3\n")]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.name for c in CHAPTERS])
def test_chapter_examples(chapter):
    blocks = python_blocks(chapter)
    if not blocks:
        pytest.skip(f"{chapter.name} has no python examples")
    globs = {"np": np, "__name__": f"spec.{chapter.stem}"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    with np.printoptions(legacy=False):
        for line, src in blocks:
            name = f"{chapter.name}:{line}"
            if ">>>" in src:
                test = parser.get_doctest(src, globs, name, str(chapter), line - 1)
                result = runner.run(test, clear_globs=False)
                globs.update(test.globs)                 # DocTest ran in a copy; keep its names
                assert result.failed == 0, f"doctest failures in {name} (see output above)"
            else:
                exec(compile(src, name, "exec"), globs)
