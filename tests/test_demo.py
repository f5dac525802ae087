"""The README's demo command works and tells the story it promises."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_run_expect_committed_orders_relayed_and_rollback_reported() -> None:
    """``python -m examples.orders`` commits four orders, rolls one back and relays four events."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.orders"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "o-3 rolled back" in result.stdout
    assert "Summary: 4 orders committed, 4 events relayed, outbox pending=0 published=4 abandoned=0" in result.stdout
    assert result.stdout.count("[relay]   OrderPlaced") == 4
