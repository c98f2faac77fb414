"""The docs stay honest: links resolve, tables have whole rows, --help shows every default.

* Every relative link and image in the README, docs/ and the other READMEs
  points at a file or directory that exists, and every ``#anchor`` (in the
  same file or another .md file) is the slug GitHub gives one of its
  headings.
* Every row of every markdown table has as many cells as its header. As on
  GitHub, a ``|`` splits a cell even inside a code span; only ``\\|`` does not.
* ``--help`` of every demo gives every flag a help text and its default
  exactly once (docs/errors.md promises it).
"""

import re
import runpy
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def markdown_files():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted(ROOT.glob("*/README.md")), *sorted(ROOT.glob("scratchae/*/README.md"))]
    return [f for f in files if not any(part.startswith(".") for part in f.relative_to(ROOT).parts)]


def prose_lines(text):
    """(line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if marker:
            if fence is None:
                fence = marker.group(1)[0] * len(marker.group(1))
                continue
            if marker.group(1).startswith(fence):
                fence = None
                continue
        if fence is None:
            yield number, line


CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def slug(heading):
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    kept = "".join(ch for ch in text
                   if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path):
    """Every heading's slug in ``path``, with GitHub's -1, -2... for repeated ones."""
    seen = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r" {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path):
    """(line number, target) of every link and image outside code."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            yield number, match.group(1)


def _name(path):
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def broken_links(path):
    problems = []
    for number, target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:...
            continue
        file_part, _, anchor = target.partition("#")
        goal = (path.parent / file_part).resolve() if file_part else path
        where = f"{_name(path)}:{number}: {target}"
        if not goal.exists():
            problems.append(f"{where}: no such file or directory")
        elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
            problems.append(f"{where}: no heading with the anchor #{anchor} in {goal.name}")
    return problems


def cells(row):
    """The number of cells GitHub sees in a table row: split on every | that is not \\|."""
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return len(re.split(r"(?<!\\)\|", row))


DELIMITER = re.compile(r"\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


def ragged_rows(path):
    problems = []
    lines = list(prose_lines(path.read_text(encoding="utf-8")))
    for k, (number, line) in enumerate(lines):
        if k == 0 or "-" not in line or not DELIMITER.fullmatch(line):
            continue
        header_number, header = lines[k - 1]
        if "|" not in header or "|" not in line:
            continue
        width = cells(header)
        if cells(line) != width:
            problems.append(f"{_name(path)}:{number}: delimiter row has "
                            f"{cells(line)} cells, the header {width}")
        previous = number
        for row_number, row in lines[k + 1:]:
            if row_number != previous + 1 or not row.strip() or "|" not in row:
                break
            previous = row_number
            if cells(row) != width:
                problems.append(f"{_name(path)}:{row_number}: {cells(row)} cells "
                                f"under a header of {width}: {row.strip()[:70]}")
    return problems


DOCS = markdown_files()


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_links_and_anchors_resolve(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_table_rows_have_the_headers_number_of_cells(path):
    assert ragged_rows(path) == []


def test_the_checks_catch_what_github_renders_wrong(tmp_path):
    """The checker itself: a dead link, a dead anchor, a code span's | splitting a cell."""
    (tmp_path / "other.md").write_text("# 12. The loss: stable sigmoid cross-entropy\n## Same\n"
                                       "## Same\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n"
        "[ok](other.md#12-the-loss-stable-sigmoid-cross-entropy) [ok](other.md#same-1) "
        "[ok](#title) `[not a link](nowhere.md)`\n"
        "[bad](missing.md) [bad](other.md#15-the-loss) ![bad](#nowhere)\n"
        "```\n[in code](nowhere.md)\n| a | b |\n|---|\n```\n"
        "| piece | formula |\n|---|---|\n| loss | `log1p(exp(-|x|))` |\n"
        "| fine | `a \\| b` |\n")
    dead, ragged = broken_links(page), ragged_rows(page)
    assert [p.split(": ", 1)[1] for p in dead] == [
        "missing.md: no such file or directory",
        "other.md#15-the-loss: no heading with the anchor #15-the-loss in other.md",
        "#nowhere: no heading with the anchor #nowhere in page.md"]
    assert len(ragged) == 1 and "4 cells under a header of 2" in ragged[0]


# --------------------------------------------------------------------------
# --help: every flag with a help text and its default, once
# --------------------------------------------------------------------------
DEMOS = sorted((ROOT / "demos").glob("*.py"))


@pytest.mark.parametrize("demo", DEMOS, ids=[d.name for d in DEMOS])
def test_help_gives_every_flag_a_help_and_one_default(demo, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", [demo.name, "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(demo), run_name="__main__")
    assert stop.value.code == 0
    text = capsys.readouterr().out
    section = re.split(r"^(?:options|optional arguments):$", text, flags=re.MULTILINE)[1]
    flags = {}
    for block in re.split(r"\n(?=  -)", section.strip("\n")):
        parts = re.split(r"\s{2,}", block.strip(), maxsplit=1)
        flags[parts[0]] = " ".join(parts[1].split()) if len(parts) == 2 else ""
    assert "-h, --help" in flags and len(flags) > 1, text
    for flag, help_text in flags.items():
        if flag == "-h, --help":
            continue
        assert help_text.count("(default: ") == 1, f"{demo.name} {flag}: {help_text!r}"
        assert not help_text.startswith("(default"), f"{demo.name} {flag} has no help"
        assert "(default: None)" not in help_text, f"{demo.name} {flag}: {help_text!r}"
