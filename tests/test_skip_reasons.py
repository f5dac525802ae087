"""The test run names why tests were skipped (issue 16.6: the summary said "see skip reasons" and showed none)."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

WORKSPACE_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
SKIPPING = """
import pytest

@pytest.mark.parametrize("n", [1, 2])
def test_needs_broker(n):
    pytest.skip("rabbitmq unavailable: nothing at 127.0.0.1:5672")

def test_needs_cluster():
    pytest.skip("redis cluster unavailable")

def test_runs():
    assert True
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_run_with_skips_expect_each_reason_once_with_its_count(pytester: pytest.Pytester, workers: list[str]) -> None:
    """Skipped tests print a "skip reasons" section: each reason once, with how many it skipped (xdist too)."""
    pytester.makeconftest(WORKSPACE_CONFTEST.read_text())
    pytester.makepyfile(test_skipping=SKIPPING)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *workers)
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.re_match_lines(
        [
            r"=+ skip reasons =+",
            r"\s+2  rabbitmq unavailable: nothing at 127\.0\.0\.1:5672$",
            r"\s+1  redis cluster unavailable$",
        ]
    )


def test_run_without_skips_expect_no_skip_section(pytester: pytest.Pytester) -> None:
    """A run that skipped nothing prints no empty "skip reasons" section."""
    pytester.makeconftest(WORKSPACE_CONFTEST.read_text())
    pytester.makepyfile(test_plain="def test_runs():\n    assert True\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*skip reasons*")
