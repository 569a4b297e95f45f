"""Every relative link in README.md and docs/*.md reaches a file of the repository, and every #anchor a
heading of the page it names (GitHub's slugs), so the pages a user follows never end in a 404."""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def links(page: pathlib.Path) -> list[str]:
    return [target for target in LINK.findall(FENCE.sub("", page.read_text()))
            if not re.match(r"[a-z]+://|mailto:", target)]


def test_slugs_follow_githubs_rule():
    assert slug("Why the plain GAN's D is less robust than the plain classifier") == \
        "why-the-plain-gans-d-is-less-robust-than-the-plain-classifier"
    assert slug("AutoAttack strength: APGD, FAB-T, Square and their ensemble") == \
        "autoattack-strength-apgd-fab-t-square-and-their-ensemble"
    assert slug("The robust counterfactual GAN (`model=\"robust_gan\"`)") == \
        "the-robust-counterfactual-gan-modelrobust_gan"


def broken_links(page: pathlib.Path) -> list[str]:
    """The page's relative links whose file is missing or whose anchor names no heading there."""
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    return broken


def test_a_missing_file_or_heading_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-section) [gone](missing.md) [no heading](other.md#b-section) [self](#top)\n"
                    "```\n[in code](ignored.md)\n```\n# Top\n")
    assert broken_links(page) == ["missing.md: no such file", "other.md#b-section: no heading with anchor "
                                  "#b-section in other.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    assert not broken_links(page), f"{page.name}: " + "; ".join(broken_links(page))
