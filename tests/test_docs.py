"""The README and the manual in docs/: short README, links that resolve, the test command CI runs.

The manual itself is built with ``mkdocs build --strict`` by ``make docs`` (part of ``make test``),
which fails on a broken link or anchor inside docs/ and on a docstring griffe cannot parse.
"""

import re
import unicodedata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc (mkdocs) and GitHub give a heading."""
    text = re.sub(r"[`*]", "", heading).strip()
    text = unicodedata.normalize("NFKD", text)
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(markdown: Path) -> set:
    lines, in_code = [], False
    for line in markdown.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            lines.append(line.lstrip("#"))
    return {_slug(line) for line in lines}


def _relative_links(markdown: Path) -> list:
    text = re.sub(r"```.*?```", "", markdown.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 400


def test_every_relative_link_of_the_readme_resolves():
    links = _relative_links(README)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        path, _, anchor = link.partition("#")
        target = (README.parent / path).resolve() if path else README
        assert target.exists(), f"README.md links to {link}, which does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"README.md links to {link}: no such heading in {path}"


def test_pages_outside_the_manual_link_into_it():
    # benchmarks/README.md points at the manual's benchmarks page, and so do all links of the folder
    for markdown in (REPO / "benchmarks" / "README.md",):
        links = _relative_links(markdown)
        assert links, markdown
        for link in links:
            assert (markdown.parent / link.partition("#")[0]).resolve().exists(), (markdown, link)


def test_slug_matches_the_manuals_anchors():
    assert _slug("### xla.py: XLA on and off") == "xlapy-xla-on-and-off"
    assert _slug("Start-up (`startup.py`)") == "start-up-startuppy"
    assert _slug("Precision, XLA and accelerators (issue 14)") == "precision-xla-and-accelerators-issue-14"


def test_readme_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    readme = README.read_text()
    assert re.search(r"^make test$", ci, re.M)
    assert re.search(r"^make test\b", readme, re.M)
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile[makefile.index("\ntest:"):].split("\n\n")[0]
    assert "$(MAKE) --no-print-directory docs" in recipe  # make test builds the manual too


def test_every_docs_page_is_in_the_nav():
    nav = "\n".join(line for line in (REPO / "mkdocs.yml").read_text().splitlines()
                    if not line.strip().startswith("#"))
    docs = REPO / "docs"
    for page in docs.rglob("*.md"):
        assert page.relative_to(docs).as_posix() in nav, page


def test_every_public_module_is_in_the_api_reference():
    referenced = set()
    for page in (REPO / "docs" / "api").glob("*.md"):
        referenced |= set(re.findall(r"^::: (\S+)$", page.read_text(), re.M))
    package = REPO / "fusionnet_keras"
    for path in package.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__" or (parts[-1].startswith("_") and parts[-1] != "__init__"):
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        assert module in referenced, f"{module} is in no docs/api/*.md page (add '::: {module}')"
