"""README's commands against the tools' own --help, its make targets against the Makefile, and its and docs' links against the tree."""

from __future__ import annotations

import contextlib
import io
import re

from tests.conftest import ROOT

SUBCOMMANDS = {"fertrain": ("classifier", "codec", "expression", "synthesis"), "ferclient": ("send", "info", "watch", "models")}


def _tools():
    from ferclient.cli import main as ferclient
    from fermodels.evaluation.cli import main as fereval
    from fermodels.export import main as ferexport
    from fermodels.train import main as fertrain
    from ferserver.main import main as ferserver

    return {"fereval": fereval, "ferexport": ferexport, "fertrain": fertrain, "ferserver": ferserver, "ferclient": ferclient}


def _help(main, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return out.getvalue()


def test_every_flag_readme_gives_a_command_is_in_its_help():
    tools, helps, checked, unknown = _tools(), {}, 0, []
    text = (ROOT / "README.md").read_text()
    # A command as README writes it: the tool, then words up to the end of the line, code span, table cell or shell operator.
    for m in re.finditer(r"\b(fereval|ferexport|fertrain|ferserver|ferclient)((?: +[^\s`|;&)]+)*)", text):
        tool, words = m.group(1), m.group(2).split()
        sub = []
        if words and words[0] in SUBCOMMANDS.get(tool, ()):
            sub = words[:2] if words[0] == "models" and len(words) > 1 and words[1] in ("pull", "list", "remove") else words[:1]
        key = (tool, *sub)
        if key not in helps:
            helps[key] = set(re.findall(r"--[a-z0-9-]+", _help(tools[tool], sub)))
        for flag in re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", " ".join(words)):
            checked += 1
            if flag not in helps[key]:
                unknown.append(f"{' '.join(key)} {flag}: {m.group(0)[:80]!r}")
    assert not unknown, unknown
    assert checked > 60 and len(helps) > 8, (checked, sorted(helps))  # the scan finds README's commands


def test_every_make_target_readme_names_exists():
    """`make X` in README is a target of the Makefile (the word after `make ` in a code span or a code block)."""
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"(?:`|^|\n)make ([a-z][a-z-]*)", (ROOT / "README.md").read_text()))
    assert named and named <= targets, named - targets
    assert {"test", "bench", "eval"} <= named


def test_every_relative_link_in_readme_and_docs_resolves():
    """A Markdown link to a file in this tree (README.md and docs/**/*.md, relative to the linking file) names one that
    exists: moving or renaming a doc must not leave dead links behind."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    dead = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text()):
            if not re.match(r"[a-z]+:", target) and not (page.parent / target).exists():
                dead.append(f"{page.relative_to(ROOT)} -> {target}")
    assert len(pages) > 20 and not dead, dead


def test_layout_names_every_script_and_docs_folder():
    """README's Layout table names every script under scripts/ and every folder under docs/: a new one must say there
    what it is for (an audit found six of them missing)."""
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("\n## ")]
    scripts = sorted(p.name for p in (ROOT / "scripts").iterdir() if p.suffix in (".py", ".sh"))
    folders = sorted(p.name for p in (ROOT / "docs").iterdir() if p.is_dir())
    assert len(scripts) > 20 and len(folders) > 20
    missing = [f"scripts/{n}" for n in scripts if f"`{n}`" not in layout] + [f"docs/{n}" for n in folders if f"`docs/{n}`" not in layout]
    assert not missing, missing
