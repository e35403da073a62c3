"""docs/RESULTS.md and the README's results are re-derived from the files in the repo: the generated tables are
recomputed from the shipped evaluation files, the measured ones are those kept in docs/results.json, and every
figure the prose quotes is one of theirs."""

import json
import re

import pytest

from aep_core.paths import PROJECT_DIR
from benchmarks import results_table as rt
from benchmarks.certificate_coverage import COVERAGE_BEGIN, COVERAGE_END

DOC = PROJECT_DIR / "docs" / "RESULTS.md"
README = PROJECT_DIR / "README.md"
MARKERS = [
    (rt.BEGIN, rt.END),
    (rt.MEASURED_BEGIN, rt.MEASURED_END),
    ("<!-- latency:begin -->", "<!-- latency:end -->"),
    (COVERAGE_BEGIN, COVERAGE_END),
]


def between(text: str, begin: str, end: str) -> str:
    assert begin in text and end in text, f"{begin} ... {end} missing"
    return text.split(begin, 1)[1].split(end, 1)[0]


def blocks(text: str) -> str:
    return "\n".join(between(text, b, e) for b, e in MARKERS if b in text)


def prose(text: str) -> str:
    for begin, end in MARKERS:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), "", text, flags=re.S)
    return text


@pytest.fixture(scope="module")
def derived():
    rows = rt.comparison_set()
    return rt.derived_text(rt.all_derived(rows), rows)


def test_the_generated_tables_are_recomputed_from_the_shipped_evaluation_files(derived):
    assert derived.strip() in between(DOC.read_text(), rt.BEGIN, rt.END)


def test_every_model_of_the_tables_has_its_evaluation_files_shipped():
    for row in rt.comparison_set():
        for stem in row.stems:
            assert (stem.parent / f"{stem.name}.val.npz").is_file(), f"{row.name}: {stem.name}.val.npz"
            assert (stem.parent / f"{stem.name}.test.npz").is_file(), f"{row.name}: {stem.name}.test.npz"


def test_the_measured_tables_quote_docs_results_json():
    payload = json.loads((PROJECT_DIR / "docs" / "results.json").read_text())
    text = rt.pruning_table(payload["pruning"], rt.comparison_set())
    assert text in between(DOC.read_text(), rt.MEASURED_BEGIN, rt.MEASURED_END)


# Settings and targets the prose names (the allowed drop, the confidence, optimiser values, the EENet λ, the
# pruning tolerance, the default's accuracy target), not figures it reports.
SETTINGS = {"0.5", "0.9", "0.05", "0.1", "1.5", "2.0", "93.5"}


def decimals(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text))


def test_every_figure_the_prose_quotes_is_in_a_table():
    doc = DOC.read_text()
    tables = blocks(doc)
    missing = sorted(decimals(prose(doc)) - decimals(tables) - SETTINGS)
    assert not missing, f"figures in docs/RESULTS.md's prose that no table shows: {missing}"


def test_every_figure_of_the_readme_results_is_in_docs_results():
    readme = README.read_text()
    section = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    tables = blocks(DOC.read_text())
    missing = sorted(decimals(section) - decimals(tables) - SETTINGS)
    assert not missing, f"figures in the README's results that docs/RESULTS.md's tables do not show: {missing}"
