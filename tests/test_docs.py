"""The documents speak to users: no internal references, and every relative link leads somewhere."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "dataset" / "README.md", *sorted((REPO / "docs").rglob("*.md")),
             *sorted((REPO / "recbole_lumos" / "properties").rglob("*.yaml"))]
INTERNAL = re.compile(r"\bissues? #?\d+|(?<![\w&])#\d+\b|DESIGN\.md|STACK\.md|these machines|\.\./shared", re.I)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_internal_references(path):
    hits = [f"line {n}: {line.strip()}" for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if INTERNAL.search(line)]
    assert not hits, "\n".join(hits)


@pytest.mark.parametrize("path", [p for p in DOCUMENTS if p.suffix == ".md"], ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    targets = [t for t in LINK.findall(path.read_text(encoding="utf-8")) if "://" not in t]
    missing = [t for t in targets if not (path.parent / t).exists()]
    assert not missing, missing


def test_readme_is_a_guide_not_a_notebook():
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
