"""tests.conftest.require: a missing browser, service or dataset skips a test locally and fails it in CI."""

from __future__ import annotations

import pytest

from tests.conftest import pytest_runtest_setup, require


def test_present_things_neither_skip_nor_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require(True, "chromium")


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_a_missing_thing_skips(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="chromium is missing"):
        require(False, "chromium")


@pytest.mark.parametrize("ci", ["true", "TRUE", " true "])
def test_in_ci_a_missing_thing_fails(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is missing and CI=true requires it"):
        require(False, "PostgreSQL")


class Marked:
    """The part of a pytest item the hook reads: its `requires` markers."""

    def __init__(self, *marks: pytest.MarkDecorator) -> None:
        self.marks = [m.mark for m in marks]

    def iter_markers(self, name: str) -> list[pytest.Mark]:
        return [m for m in self.marks if m.name == name]


def test_the_requires_marker_calls_require(monkeypatch: pytest.MonkeyPatch) -> None:
    item = Marked(pytest.mark.requires(True, "ray"), pytest.mark.requires(False, "ray"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="ray is missing"):
        pytest_runtest_setup(item)  # type: ignore[arg-type]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="ray is missing"):
        pytest_runtest_setup(item)  # type: ignore[arg-type]


@pytest.mark.requires(True, "nothing")
def test_a_met_requirement_runs_the_test() -> None:
    assert True
