"""ferclient send's progress line (on a terminal only, redrawn in place, cleared before anything else is printed), its output names, README's usage block against the parser, and a reader that leaves early."""

from __future__ import annotations

import io
import subprocess

import pytest
from ferclient.cli import Progress

from ..conftest import BIN


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


def _options(p) -> dict[str, list[list[str]]]:
    """{command path: each option's flags} of an argparse parser and its subcommands ('send', 'models pull', ...)."""
    import argparse

    out = {}
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                out.update({f"{name} {k}".strip(): v for k, v in _options(sub).items()})
    out.setdefault("", [])
    out[""] += [[s for s in a.option_strings if s.startswith("--")] for a in p._actions if a.option_strings and a.dest != "help"]
    return out


def test_readme_usage_is_the_parser():
    """README's usage block (and the line on flags every networked command takes) names exactly the flags each
    ferclient command takes: a flag added, renamed or dropped in one place fails here until the other follows."""
    import re

    from ferclient.cli import parser
    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    client = text[text.index("## The client"):]
    usage = client[client.index("```\n") + 4:client.index("\n```", client.index("```\n") + 4)]
    common = set(re.findall(r"`(--[a-z0-9-]+)", client[client.index("Every command that talks to a server"):client.index("([On a network]")]))
    documented: dict[str, set[str]] = {}
    command = ""
    for line in usage.splitlines():
        if line.startswith("ferclient "):
            command = line.split()[1]
            command = "" if command.startswith("--") else command  # ferclient --version: the top-level parser
        for part in line.split(" | ") if command == "models" else [line]:
            sub = re.match(r"(?:ferclient models )?(pull|list|remove)\b", part.strip())
            key = f"models {sub.group(1)}" if command == "models" and sub else command
            documented.setdefault(key, set()).update(re.findall(r"(--[a-z0-9-]+)", part))
    channel = {"--server", "--tls-ca", "--tls-cert", "--tls-key", "--token-file", "--plaintext-token", "--timeout"}
    assert common == channel, common
    for command, options in _options(parser()).items():
        if not options:
            continue
        listed = documented.get(command, set()) | common
        for flags in options:
            assert set(flags) & listed, f"ferclient {command}: {flags} is not in README's usage"
        takes = {f for flags in options for f in flags}
        assert documented.get(command, set()) <= takes, f"README lists {documented[command] - takes} for ferclient {command}"


def test_a_bad_value_is_one_line_naming_where_it_came_from(tmp_path):
    """argparse printed its usage block first (7 lines), and a bad FERCODEC_TIMEOUT was reported as a --timeout never typed."""
    import os
    import subprocess

    from ..conftest import BIN

    def run(*args, **env):
        return subprocess.run([str(BIN / "ferclient"), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env})

    for r, says in ((run("send", "x.png", "--timeout", "0"), "argument --timeout: must be a positive number of seconds, got 0 (ferclient send --help)"),
                    (run("send", "x.png", FERCODEC_TIMEOUT="abc"), "got abc (from $FERCODEC_TIMEOUT)"),
                    (run("models"), "the following arguments are required: {pull,list,remove}")):
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_a_reader_that_leaves_early_ends_the_run_quietly(server, astronaut, tmp_path):
    """`ferclient send ... | head -c 0`: the reader is gone before the first line; a broken pipe is not an error of ours
    (exit 0, nothing on stderr). Ctrl-C's handling in main() once caught it first and re-raised it as a traceback."""
    err = tmp_path / "err.txt"
    r = subprocess.run(["bash", "-c", f'"{BIN / "ferclient"}" send "{astronaut}" --server {server.address} --json 2>"{err}" | head -c 0; '
                        'exit ${PIPESTATUS[0]}'], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and err.read_text() == "", err.read_text()


def _as_user(argv: list[str]) -> list[str]:
    """argv run without root's power to read and write anything (tests run as root in CI's container), or as it is."""
    import os
    import shutil

    if os.geteuid() != 0:
        return argv
    if not shutil.which("setpriv"):
        pytest.skip("root without setpriv: an unreadable directory cannot be made here")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search", *argv]


def test_what_a_user_gets_wrong_is_one_line_before_anything_is_sent(server, astronaut, tmp_path):
    """Each was a traceback, a silent default (--tls-ca "" sent in plaintext), a failure after the faces were sent, or a
    misleading line. A hidden file beside a photo (macOS's ._IMG_1.jpg) is not sent, and a directory that cannot be
    listed is its own line while the other images still go."""
    import os

    (tmp_path / "mac").mkdir()
    (tmp_path / "mac" / "IMG_1.png").write_bytes(astronaut.read_bytes())
    (tmp_path / "mac" / "._IMG_1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    for d in ("locked", "readonly"):
        (tmp_path / d).mkdir()
    os.chmod(tmp_path / "locked", 0)
    os.chmod(tmp_path / "readonly", 0o555)
    (tmp_path / "empty.jpg").write_bytes(b"")
    send = [str(BIN / "ferclient"), "send", "--server", server.address]

    def run(*args, stdin=subprocess.DEVNULL):
        return subprocess.run(_as_user([*send, *args]), capture_output=True, text=True, timeout=60, stdin=stdin)

    r = run(str(tmp_path / "mac"))
    assert r.returncode == 0 and r.stdout.count("happy") == 1 and r.stderr == "", r.stderr
    r = run(str(tmp_path / "locked"), str(astronaut))
    assert r.returncode == 1 and "happy" in r.stdout and r.stderr.strip().endswith("locked: cannot list the directory (Permission denied)"), r.stderr
    for args, code, says in (([str(astronaut), "--annotate", str(tmp_path / "readonly")], 2, "cannot write into"),
                             ([str(astronaut), "--tls-ca", ""], 2, "argument --tls-ca: must not be empty (an unset shell variable?)"),
                             ([str(astronaut), "--reconstruct", ""], 2, "argument --reconstruct: must not be empty"),
                             ([str(astronaut), "--server", ":50051"], 2, ":50051 has no host"),
                             ([str(astronaut), "--min-face", "30.5"], 2, "must be a positive whole number of pixels, got 30.5"),
                             ([str(astronaut), "--quality", "2.5"], 2, "must be a quality index (a whole number"),
                             ([str(tmp_path / "empty.jpg")], 1, "empty.jpg: an empty file (0 bytes): not an image")):
        r = run(*args)
        assert r.returncode == code and r.stdout == "" and r.stderr.count("\n") == 1 and says in r.stderr, (args, r.stderr)
    r = subprocess.run(["bash", "-c", " ".join(f'"{a}"' for a in send) + " - <&-"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "standard input, which is closed here" in r.stderr, r.stderr
