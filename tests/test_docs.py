"""The documentation the code cites: docs/theory.md keeps its numbered
sections, and every "docs/theory.md §N" in the package and the tests exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THEORY = ROOT / "docs" / "theory.md"
SECTIONS = [
    "1. Training problem",
    "2. The kernel tower",
    "3. The hierarchy and its truncation",
    "4. Sizes and predicted scalings",
    "5. Networks",
    "6. Infinite width",
    "7. Numerical conventions",
    "8. The reduced-basis hierarchy",
    "9. Other losses and the laziness scale",
    "10. neural-tangents conventions",
]


def test_theory_keeps_its_numbered_sections():
    headings = re.findall(r"^## (.+)$", THEORY.read_text(), flags=re.M)
    assert headings == SECTIONS


def test_every_cited_section_exists():
    cited = set()
    for path in [*ROOT.glob("nth_dynamics/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("scenarios/*.yaml")]:
        for sections in re.findall(r"docs/theory\.md (§[0-9§–, ]+)", path.read_text()):
            cited.update(int(n) for n in re.findall(r"[0-9]+", sections))
    assert cited and cited <= set(range(1, len(SECTIONS) + 1)), sorted(cited)


def test_docs_point_only_inside_the_repository():
    for path in [*ROOT.glob("docs/**/*.md"), ROOT / "mkdocs.yml"]:
        text = path.read_text()
        for outside in ("MATH.md", "DESIGN.md", "STYLE.md", "shared/"):
            assert outside not in text, (path, outside)
