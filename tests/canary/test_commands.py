"""`statefleet canary set` and `canary status`, run as commands against a store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def canary(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "statefleet", "canary", *args], capture_output=True, text=True,
                          timeout=60)


def test_set_then_status_shows_the_weights_versions_and_audited_changes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    first = canary("set", "v1=100", "--store", store, "--reason", "first release")
    assert first.returncode == 0, first.stderr
    assert "revision 1" in first.stdout and "v1=100" in first.stdout
    assert "no live instance serves v1" in first.stderr  # nothing runs yet: said, not refused
    second = canary("set", "v2=10", "--store", store, "--reason", "canary of v2")
    assert second.returncode == 0 and "v1=90" in second.stdout and "v2=10" in second.stdout
    status = canary("status", "--json", "--store", store)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["revision"] == 2 and report["weights"] == {"v1": 90, "v2": 10}
    assert [row["version"] for row in report["versions"]] == ["v1", "v2"]
    assert [entry["reason"] for entry in report["log"]] == ["canary of v2", "first release"]
    assert report["log"][0]["actor"].startswith("statefleet canary set (")
    text = canary("status", "--store", store).stdout
    assert "routing weights (revision 2): v1=90 v2=10" in text and "canary of v2" in text


def test_bad_weights_are_refused_with_the_reason_and_change_nothing(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    refused = canary("set", "v2=10", "--store", store)
    assert refused.returncode == 2 and "name every version" in refused.stderr
    refused = canary("set", "v2=ten", "--store", store)
    assert refused.returncode == 2 and "is not VERSION=PERCENT" in refused.stderr
    refused = canary("set", "v2=10", "--store", "postgres://x")
    assert refused.returncode == 2 and "store" in refused.stderr.lower()
    assert json.loads(canary("status", "--json", "--store", store).stdout)["revision"] == 0
