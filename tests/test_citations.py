"""Every source a shipped table or doc cites is in the repository: cited files exist, cited sections
(`docs/references.md §3`, `docs/architecture-model.md §2`) have a heading of that number, and no file points
outside the repository (the team's shared folder, absolute paths, `../` out of the tree)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = sorted((ROOT / "hwconfigs").rglob("*.yaml")) + sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
IDS = [str(p.relative_to(ROOT)) for p in SCANNED]

# A repository path: a top-level folder of the repo, then a file name with an extension.
REPO_PATH = re.compile(r"(?<![\w./-])((?:hwconfigs|docs|simulator|models|benchmarks|tests|\.ci)/[\w./*-]*\w"
                       r"\.(?:csv|ya?ml|md|py|json|txt|onnx|qnn|npz|png))(?![\w/])")
# A data file named without its folder in a table (the CACTI table: `cacti7_sram_64bit_word.csv`).
BARE_CSV = re.compile(r"(?<![\w./-])([\w-]+\.csv)(?![\w/])")
# A section of a Markdown file: `docs/references.md §8.1`, `architecture-model.md §2`.
SECTION = re.compile(r"([\w./-]+\.md)\s*§\s*(\d+(?:\.\d+)*)")
# A section of the same document: `(see §6)` in a .md file.
OWN_SECTION = re.compile(r"(?<![\w.])§\s*(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}\s+(?:§\s*)?(\d+(?:\.\d+)*)\.?\s", re.M)

# What may not appear in a shipped file: the team's shared folder and the notes kept there.
OUTSIDE = ("../shared", "/work/shared", "shared/reference-data", "REFERENCES.md",
           "PEERS-COST-MODELS.md", "DESIGN.md", "seeds/")
LOOSE_DATA = re.compile(r"(?<!hwconfigs/)\breference-data/")   # the in-repo copy is hwconfigs/reference-data/
ABSOLUTE = re.compile(r"(?<![\w.~])/(?:work|home|root|Users|mnt|check|srv|opt)/[\w.-]+")
PARENT = re.compile(r"(?<![\w.])((?:\.\./)+[\w.*-][\w./*-]*)")

# Paths in the docs that name a user's file in an example (an error message, a command), not a citation.
EXAMPLES = {"hwconfigs/x.yaml"}


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def headings(path: Path) -> set:
    return set(HEADING.findall(text_of(path)))


def all_repo_names() -> set:
    return {p.name for p in ROOT.rglob("*") if ".git" not in p.parts}


@pytest.mark.parametrize("path", SCANNED, ids=IDS)
def test_nothing_points_outside_the_repository(path):
    text = text_of(path)
    for needle in OUTSIDE:
        assert needle not in text, f"{path.relative_to(ROOT)} cites {needle!r}, outside the repository"
    assert not LOOSE_DATA.findall(text), f"{path.relative_to(ROOT)} cites reference-data/ outside hwconfigs/"
    assert not ABSOLUTE.findall(text), f"{path.relative_to(ROOT)}: absolute path {ABSOLUTE.findall(text)}"
    for rel in PARENT.findall(text):
        target = (path.parent / rel).resolve()
        assert target.is_relative_to(ROOT), f"{path.relative_to(ROOT)}: {rel} leaves the repository"


@pytest.mark.parametrize("path", SCANNED, ids=IDS)
def test_cited_files_exist(path):
    text = text_of(path)
    for rel in set(REPO_PATH.findall(text)) - EXAMPLES:
        if "*" in rel:
            assert list(ROOT.glob(rel)), f"{path.relative_to(ROOT)} cites {rel}: no such file"
        else:
            assert (ROOT / rel).exists(), f"{path.relative_to(ROOT)} cites {rel}: no such file"
    if path.suffix == ".yaml":    # in a table a bare data-file name is a citation (in the docs: an example's)
        names = all_repo_names()
        for name in set(BARE_CSV.findall(text)):
            assert name in names, f"{path.relative_to(ROOT)} cites {name}: no such file in the repository"


@pytest.mark.parametrize("path", SCANNED, ids=IDS)
def test_cited_sections_exist(path):
    text = text_of(path)
    for doc, number in SECTION.findall(text):
        target = ROOT / doc if "/" in doc else next(
            (p for p in (path.parent / doc, ROOT / "docs" / doc) if p.exists()), path.parent / doc)
        assert target.exists(), f"{path.relative_to(ROOT)} cites {doc} §{number}: no such file"
        assert number in headings(target), f"{path.relative_to(ROOT)} cites {doc} §{number}: no such heading"
    if path.suffix == ".md":
        # a bare §N in a doc is a section of that doc, unless it names a paper's section (seed 004 §III-A)
        own = headings(path)
        cited_elsewhere = {m.end() for m in SECTION.finditer(text)}
        for m in OWN_SECTION.finditer(text):
            if m.end() in cited_elsewhere or re.search(r"seed \d+\s*$", text[:m.start()]):
                continue
            assert m.group(1) in own, f"{path.relative_to(ROOT)} cites its own §{m.group(1)}: no such heading"


def test_the_scan_sees_the_citations():
    """The patterns find what the tables actually cite (a guard against a scan that matches nothing)."""
    tsmc = text_of(ROOT / "hwconfigs" / "tsmc90.yaml")
    assert ("docs/references.md", "3") in SECTION.findall(tsmc)
    assert "hwconfigs/reference-data/cacti7_sram_64bit_word.csv" in REPO_PATH.findall(tsmc)
    assert "cacti7_sram_64bit_word.csv" in BARE_CSV.findall(tsmc)
    assert PARENT.findall("see ../shared/REFERENCES.md") == ["../shared/REFERENCES.md"]
    assert ABSOLUTE.findall("from /work/shared/x") == ["/work/shared"]


def test_references_list_the_seed_papers():
    refs = text_of(ROOT / "docs" / "references.md")
    section = refs.split("## 1.")[1].split("\n## ")[0]
    for seed in ("000", "001", "002", "003", "004"):
        assert re.search(rf"^\| {seed} \|", section, re.M), f"seed {seed} missing from docs/references.md §1"
    for title in ("An Overwiew of Datatype Quantization Techniques for Convolutional Neural Networks",
                  "Efficient Learning Algorithm Using Compact Data Representation in Neural Networks"):
        assert title in section


def test_the_cacti_table_the_docs_cite_is_the_one_the_cost_model_reads():
    from simulator.hw.sram import CACTI_FILE

    assert (ROOT / "hwconfigs" / CACTI_FILE).is_file()
    assert f"hwconfigs/{CACTI_FILE}" in text_of(ROOT / "docs" / "references.md")
