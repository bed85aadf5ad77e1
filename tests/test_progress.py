"""Log lines go through tqdm's writer: a line never starts glued to the end of a progress bar."""

from __future__ import annotations

import io
import logging
import re

from tqdm.auto import tqdm

from benchmark.core.progress import TqdmLogHandler


def test_log_line_clears_the_bar_first():
    out = io.StringIO()
    bar = tqdm(total=3, file=out, desc="train")
    bar.update(1)
    log = logging.getLogger("test_progress")
    log.addHandler(TqdmLogHandler(out))
    log.propagate = False
    try:
        log.warning("cache hit")
    finally:
        bar.close()
    text = out.getvalue()
    before = text[: text.index("cache hit")]
    # what precedes the line on its terminal row: nothing but the blanks that erased the bar
    assert before.rsplit("\r", 1)[1] == "", repr(before)
    assert before.rsplit("\r", 2)[1].strip() == "", repr(before)


def test_echo_clears_a_bar_on_stderr(capsys):
    from benchmark.core.progress import echo

    bar = tqdm(total=3, desc="train")  # on stderr, where tqdm draws by default
    bar.update(1)
    try:
        echo("[1/4] naive · none: ok")
    finally:
        bar.close()
    captured = capsys.readouterr()
    assert captured.out == "[1/4] naive · none: ok\n"
    assert re.search(r"\r {20,}\r", captured.err), "the bar was not cleared (blanked) for the line"
