"""Citations: every {cite} key exists in book/references.bib, the bibliography holds the papers the
book relies on (with their arXiv ids), and every chapter cites the papers it is built on.

The build also fails on an unknown key (sphinxcontrib-bibtex warns, -W makes it an error); this test
says which key and which file, without a build.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pybtex.database import parse_string

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "book" / "references.bib"
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")

# Papers issue 9 asks for, with the arXiv id each entry must carry (None: not on arXiv).
REQUIRED = {
    "vaswani2017attention": "1706.03762",
    "child2019generating": "1904.10509",
    "beltagy2020longformer": "2004.05150",
    "wang2020linformer": "2006.04768",
    "choromanski2021rethinking": "2009.14794",
    "katharopoulos2020transformers": "2006.16236",
    "dao2022flashattention": "2205.14135",
    "dao2023flashattention2": "2307.08691",
    "shah2024flashattention3": "2407.08608",
    "keles2023computational": "2209.04881",
    "alman2023fast": "2302.13214",
    "fedus2021switch": "2101.03961",
    "hoffmann2022training": "2203.15556",
    "kaplan2020scaling": "2001.08361",
    "korthikanti2022reducing": "2205.05198",
    "chen2016training": "1604.06174",
    "gu2023mamba": "2312.00752",
    "sun2023retentive": "2307.08621",
    "arora2023zoology": "2312.04927",
    "feng2025elementwise": "2501.05730",
    "hilsenbek2024breaking": "2406.10906",
    "yun2020are": "1912.10077",
    "jiang2023mistral": "2310.06825",
    "shazeer2019fast": "1911.02150",
    "ainslie2023gqa": "2305.13245",
    "radford2019language": None,
    "brown2020language": "2005.14165",
    "rabe2021selfattention": "2112.05682",
    "milakov2018online": "1805.02867",
}

# What each chapter is built on (chapter page book/chNN_*.md and its sections notebooks/NN*.md
# together must cite every key listed).
CHAPTER_CITES = {
    "01": ["vaswani2017attention"],
    "02": ["brown2020language"],
    "03": ["korthikanti2022reducing", "chen2016training"],
    "04": [
        "child2019generating",
        "beltagy2020longformer",
        "wang2020linformer",
        "choromanski2021rethinking",
        "katharopoulos2020transformers",
        "dao2022flashattention",
    ],
    "05": ["keles2023computational", "alman2023fast", "yun2020are", "arora2023zoology"],
    "06": ["fedus2021switch", "hoffmann2022training", "kaplan2020scaling"],
    "07": ["feng2025elementwise"],
    "08": ["hilsenbek2024breaking"],
    "09": ["liu2023ring", "jacobs2023deepspeed", "brandon2023striped", "dubey2024llama3"],
    "10": [
        "kwon2023efficient",
        "deepseekai2024deepseekv2",
        "xiao2023efficient",
        "leviathan2023fast",
        "chen2023accelerating",
    ],
}


def _bib():
    return parse_string(BIB.read_text(encoding="utf-8"), "bibtex")


def _sources() -> list[Path]:
    return sorted((ROOT / "book").rglob("*.md")) + sorted((ROOT / "notebooks").glob("*.md"))


def cited_keys(text: str) -> list[str]:
    """All keys of {cite}, {cite:p}, {cite:t}, ... roles in a MyST text."""
    return [key.strip() for group in CITE.findall(text) for key in group.split(",") if key.strip()]


def _chapter_text(nn: str) -> str:
    files = sorted((ROOT / "book").glob(f"ch{nn}_*.md")) + sorted(
        (ROOT / "notebooks").glob(f"{nn}*.md")
    )
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def test_cite_regex_reads_every_role_form():
    text = "a {cite}`x2020a` b {cite:t}`y2021b, z2022c` c {cite:p}`w2019`"
    assert cited_keys(text) == ["x2020a", "y2021b", "z2022c", "w2019"]


def test_bibliography_parses_and_keys_are_unique():
    raw_keys = re.findall(r"^@\w+\{([^,\s]+),", BIB.read_text(encoding="utf-8"), flags=re.M)
    duplicates = sorted({k for k in raw_keys if raw_keys.count(k) > 1})
    assert not duplicates, f"duplicate BibTeX keys in {BIB.name}: {duplicates}"
    assert set(_bib().entries) == set(raw_keys)


def test_every_cited_key_is_in_the_bibliography():
    keys = set(_bib().entries)
    unknown = []
    for path in _sources():
        for key in cited_keys(path.read_text(encoding="utf-8")):
            if key not in keys:
                unknown.append(f"{path.relative_to(ROOT)}: {key}")
    assert not unknown, "unknown citation keys (add them to book/references.bib):\n" + "\n".join(
        unknown
    )


@pytest.mark.parametrize("key", sorted(REQUIRED))
def test_required_paper_is_complete(key):
    entries = _bib().entries
    assert key in entries, f"{key} missing from {BIB.name}"
    entry = entries[key]
    assert entry.persons.get("author"), f"{key}: no authors"
    for field in ("title", "year"):
        assert entry.fields.get(field), f"{key}: no {field}"
    arxiv = REQUIRED[key]
    if arxiv is not None:
        assert entry.fields.get("eprint") == arxiv, f"{key}: eprint should be arXiv {arxiv}"
        assert arxiv in entry.fields.get("url", ""), f"{key}: url should point at arXiv {arxiv}"


def test_published_key_list_matches_entries():
    """The comment block at the top of references.bib lists keys others may use: each must exist."""
    text = BIB.read_text(encoding="utf-8")
    header = text[: text.index("@")]
    listed = re.findall(r"^%\s+([a-z]+\d{4}[a-z0-9]*)\s", header, flags=re.M)
    assert len(listed) >= len(REQUIRED)
    missing = sorted(set(listed) - set(_bib().entries))
    assert not missing, f"keys listed in the header but not defined: {missing}"


@pytest.mark.parametrize("nn", sorted(CHAPTER_CITES))
def test_chapter_cites_the_papers_it_is_built_on(nn):
    text = _chapter_text(nn)
    assert text, f"chapter {nn}: no book/ch{nn}_*.md nor notebooks/{nn}*.md"
    cited = set(cited_keys(text))
    missing = [key for key in CHAPTER_CITES[nn] if key not in cited]
    assert not missing, f"chapter {nn} should cite {missing}"
