"""Every case of every shipped mapping's fixtures (what ``modwatch inputs test`` runs), and the
coverage each shipped mapping must have: three mapped actions, one dropped, one malformed record."""

from __future__ import annotations

import pytest

from streams.inputs import bundled_inputs_dir, load_mappings
from streams.inputs.fixtures import Case, load_fixtures, run_case
from streams.inputs.loader import fixtures_file

DIRECTORY = bundled_inputs_dir()
MAPPINGS = load_mappings(DIRECTORY)
CASES = [(m, case) for m in sorted(MAPPINGS) for case in load_fixtures(fixtures_file(DIRECTORY, m)).cases]


@pytest.mark.parametrize(("mapping_id", "case"), CASES, ids=[f"{m}: {c.name}" for m, c in CASES])
def test_fixture_case(mapping_id: str, case: Case) -> None:
    result = run_case(MAPPINGS[mapping_id], case)
    assert result.ok, result.format()


@pytest.mark.parametrize("mapping_id", sorted(MAPPINGS))
def test_each_mapping_has_the_cases_it_needs(mapping_id: str) -> None:
    cases = [c for m, c in CASES if m == mapping_id]
    mapped_actions = {e["source"]["action"] for c in cases for e in c.events or []}
    assert len(mapped_actions) >= 3, mapped_actions
    assert any(c.dropped for c in cases) and any(c.rejected for c in cases)


def test_a_failing_case_is_reported_with_the_field() -> None:
    okta = MAPPINGS["okta"]
    case = next(c for m, c in CASES if m == "okta" and c.events)
    wrong = case.model_copy(update={"events": [{**case.events[0], "event_type": "account.terminate"}]})  # type: ignore[index]
    result = run_case(okta, wrong)
    assert not result.ok and "event_type: expected 'account.terminate', got 'account.suspend'" in result.format()
