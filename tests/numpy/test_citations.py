"""Every citation of the mathematics in the code resolves to a heading of docs/mathematics.md.

Docstrings cite ``docs/mathematics.md section 2``, ``section 2.6``, ``sections 2 and 4``,
``sections 1-4`` or ``sections 2, 4, 5``; each number must be a numbered heading of that page.
No file may cite the external specification the page was written from: the page is the
project's own account.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "mathematics.md"
FOLDERS = ("iba", "iba_torch", "iba_tf", "iba_jax", "conformance", "benchmarks", "tests")
TOP_SECTIONS = {
    "1": "Estimator",
    "2": "Per-Sample Bottleneck",
    "3": "Readout Bottleneck",
    "4": "CoIBA",
    "5": "M2IB",
    "6": "Text IBA",
    "7": "Evaluation metrics",
    "8": "Baselines",
}

NUMBER = r"\d+(?:\.\d+)*"
CITATION = re.compile(
    rf"docs/mathematics\.md\s+sections?\s+"
    rf"(?P<numbers>{NUMBER}(?:\s*(?:,\s*and|,|and|-|–|to)\s*{NUMBER})*)"
)
RANGE = re.compile(rf"({NUMBER})\s*(?:-|–|to)\s*({NUMBER})")
HEADING = re.compile(rf"^#{{2,6}}\s+({NUMBER})\.?\s+(.+?)\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"\bSPEC\b")


def sources() -> list[Path]:
    """The checked files: every ``.py`` under ``FOLDERS``, and the README."""
    files = [ROOT / "README.md"]
    for folder in FOLDERS:
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return [f for f in files if f.is_file()]


def headings() -> dict[str, str]:
    """Section number to title, for every numbered heading of the page."""
    return {m.group(1): m.group(2) for m in HEADING.finditer(PAGE.read_text(encoding="utf-8"))}


def cited_numbers(text: str) -> list[str]:
    """The section numbers cited in ``text``; a range ``1-4`` yields 1, 2, 3 and 4."""
    numbers = []
    for match in CITATION.finditer(text):
        group = match.group("numbers")
        for start, end in RANGE.findall(group):
            if "." in start or "." in end:
                numbers += [start, end]
            else:
                numbers += [str(n) for n in range(int(start), int(end) + 1)]
        numbers += re.findall(NUMBER, RANGE.sub(" ", group))
    return numbers


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def test_page_has_the_numbered_top_sections():
    found = {number: title for number, title in headings().items() if "." not in number}
    assert found == TOP_SECTIONS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(docs/mathematics.md section 2)", ["2"]),
        ("docs/mathematics.md section 2.6;", ["2.6"]),
        ("(docs/mathematics.md\n    sections 2 and 4)", ["2", "4"]),
        ("(see docs/mathematics.md sections 1-4)", ["1", "2", "3", "4"]),
        ("(docs/mathematics.md sections 2, 4, 5)", ["2", "4", "5"]),
        ("(docs/mathematics.md sections 1, 2 and 4)", ["1", "2", "4"]),
        ("docs/mathematics.md sections 7 and 8.", ["7", "8"]),
        ("no citation here, section 3", []),
    ],
)
def test_citation_pattern(text, expected):
    assert cited_numbers(text) == expected


def test_every_citation_resolves_to_a_heading():
    known = headings()
    broken = []
    n_citations = 0
    for path in sources():
        text = path.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            n_citations += 1
            for number in cited_numbers(match.group(0)):
                if number not in known:
                    where = f"{path.relative_to(ROOT)}:{line_of(text, match.start())}"
                    broken.append(f"{where}: section {number} ({match.group(0)!r})")
    message = "citations of missing sections of docs/mathematics.md:\n" + "\n".join(broken)
    assert not broken, message
    assert n_citations > 0, "no citation of docs/mathematics.md found: is the pattern right?"


def test_no_citation_of_the_external_specification():
    found = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        for match in EXTERNAL.finditer(text):
            line = text.splitlines()[line_of(text, match.start()) - 1].strip()
            found.append(f"{path.relative_to(ROOT)}:{line_of(text, match.start())}: {line}")
    assert not found, (
        "cite docs/mathematics.md (a file of this repository), not a document outside it:\n"
        + "\n".join(found)
    )
