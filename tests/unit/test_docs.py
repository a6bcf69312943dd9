"""README.md stays a front door that matches the tree: short, every folder, target and command listed, links alive."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from emotion_cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 300
IGNORED_DIRS = {"__pycache__"}


def strip_code_fences(markdown: str) -> str:
    """Markdown without fenced blocks (a `# comment` in a shell block is not a heading)."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", markdown, flags=re.S | re.M)


def strip_code(markdown: str) -> str:
    """Markdown without fenced blocks and inline code, where brackets and parentheses are not links."""
    return re.sub(r"`[^`\n]*`", "", strip_code_fences(markdown))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", strip_code_fences(markdown), flags=re.M):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def broken_links(page: Path) -> list[str]:
    """Relative links of a page whose file, or whose #anchor in a markdown file, does not exist."""
    problems = []
    text = page.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", strip_code(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{page.name}: {target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text(encoding="utf-8")):
            problems.append(f"{page.name}: {target} (no such heading)")
    return problems


def section(markdown: str, title: str) -> str:
    """The text of the `## title` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, flags=re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def layout_rows(markdown: str) -> dict[str, str]:
    """The layout table as {first cell: whole row}."""
    rows = re.findall(r"^\|(.+)\|\s*$", section(markdown, "Layout"), flags=re.M)
    return {row.split("|")[0].strip(): row for row in rows}


def missing_folders(markdown: str, package: Path) -> list[str]:
    """Folders of the package the layout table does not name: a stage as `pkg/stage/` in the first column, and
    each folder inside a stage (e.g. static/) in that stage's row."""
    rows = layout_rows(markdown)
    missing = []
    for stage in sorted(p for p in package.iterdir() if p.is_dir() and p.name not in IGNORED_DIRS):
        name = f"`{package.name}/{stage.name}/`"
        row = next((row for first, row in rows.items() if name in first), None)
        if row is None:
            missing.append(f"{package.name}/{stage.name}/")
            continue
        for inner in sorted(p for p in stage.rglob("*") if p.is_dir() and p.name not in IGNORED_DIRS):
            if f"{inner.relative_to(stage).as_posix()}/" not in row:
                missing.append(f"{package.name}/{stage.name}/{inner.relative_to(stage).as_posix()}/")
    return missing


def described_make_targets(makefile: str) -> list[str]:
    """Targets with a `## description` (the ones `make help` lists)."""
    return re.findall(r"^([A-Za-z0-9_.-]+):[^#\n]*## ", makefile, flags=re.M)


def cli_commands() -> list[str]:
    """Subcommands of the `emotion` parser."""
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(subparsers.choices)


def mentions(markdown: str, prefix: str, name: str) -> bool:
    """Whether `prefix name` appears as a whole word (so `make bench` is not found in `make bench-model`)."""
    return re.search(rf"{re.escape(prefix)} {re.escape(name)}(?![\w-])", markdown) is not None


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_is_short(readme: str) -> None:
    lines = len(readme.splitlines())
    assert lines < MAX_README_LINES, f"README.md has {lines} lines: move detail into docs/ or bench/README.md"


def test_layout_table_names_every_pipeline_folder(readme: str) -> None:
    assert missing_folders(readme, ROOT / "pipeline") == []


def test_every_described_make_target_is_in_the_readme(readme: str) -> None:
    targets = described_make_targets((ROOT / "Makefile").read_text(encoding="utf-8"))
    assert "pipeline" in targets and "test" in targets
    assert [t for t in targets if not mentions(readme, "make", t)] == []


def test_every_cli_command_is_in_the_readme(readme: str) -> None:
    commands = cli_commands()
    assert "run" in commands and "serve" in commands
    assert [c for c in commands if not mentions(readme, "emotion", c)] == []


def test_readme_links_every_docs_page(readme: str) -> None:
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    assert [p for p in pages if f"](docs/{p}" not in readme] == []


@pytest.mark.parametrize(
    "page", [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_relative_links_point_at_existing_files(page: Path) -> None:
    assert broken_links(page) == []


def test_checks_catch_what_they_guard(tmp_path: Path) -> None:
    """The helpers report a dead link, a dead anchor, a missing folder and a prefix-only mention."""
    (tmp_path / "other.md").write_text("# Other\n\n## A `code` heading: yes\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-code-heading-yes) [bad](missing.md) [anchor](other.md#nope) [web](https://x.org)\n"
        "`[not a link](missing-too.md)`\n```\n[in a block](gone.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["page.md: missing.md (no such file)", "page.md: other.md#nope (no such heading)"]

    package = tmp_path / "pkg"
    (package / "data" / "sample").mkdir(parents=True)
    (package / "serving").mkdir()
    readme = (
        "## Layout\n\n| path | holds |\n|---|---|\n| `pkg/data/` | readers, `sample/` |\n"
        "\n## Next\n| `pkg/serving/` | |\n"  # a row outside the Layout section does not count
    )
    assert missing_folders(readme, package) == ["pkg/serving/"]

    assert not mentions("make bench-model", "make", "bench")
    assert mentions("`make bench`, then", "make", "bench")
