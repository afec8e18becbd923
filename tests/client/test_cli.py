"""ferclient send's progress line (on a terminal only, redrawn in place, cleared before anything else is printed) and its output names."""

from __future__ import annotations

import io

from ferclient.cli import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_clears_itself():
    tty = _Terminal()
    p = Progress(3, tty)
    p.show(1)
    p.show(2)
    assert tty.getvalue() == "\rferclient: 1/3 images\x1b[K\rferclient: 2/3 images\x1b[K"
    p.clear()
    p.clear()  # nothing shown since: nothing written
    assert tty.getvalue().endswith("images\x1b[K\r\x1b[K") and tty.getvalue().count("\r\x1b[K") == 1
    p.show(3)  # the last file: its answers follow, no progress line to leave behind
    assert not p.shown


def test_no_progress_for_a_pipe_or_a_single_file():
    pipe = io.StringIO()
    p = Progress(50, pipe)
    p.show(1)
    p.clear()
    q = Progress(1, _Terminal())
    q.show(0)
    assert pipe.getvalue() == "" and not q.on


def test_outputs_of_files_sharing_a_stem_get_their_own_names():
    from ferclient.cli import _stem

    stems = {}
    assert [_stem(p, stems) for p in ("photos/a.jpg", "more/a.png", "b.jpg", "photos/a.jpg", "x/a.gif")] == ["a", "a-2", "b", "a", "a-3"]
