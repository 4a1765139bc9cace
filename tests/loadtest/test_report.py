"""The HTML report is self-contained and renders in headless Chromium with no console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from statefleet.loadtest.chaos import ChaosSpec
from statefleet.loadtest.report import write_report
from statefleet.loadtest.result import build_result
from statefleet.loadtest.runner import LoadTest, RunOptions
from statefleet.loadtest.workload import Profile, Workload

from . import fake_server

pytestmark = pytest.mark.timeout(120)


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    # Never skip: ./dev test installs it (ensure_chromium).
    raise RuntimeError("chromium is not installed; run ./dev test, which installs it (apt-get install chromium)")


def render(page: Path, shot: Path, tmp: Path) -> tuple[bytes, list[str]]:
    """Screenshot ``page``; returns the PNG and the console messages Chromium logged."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=90,
    )
    assert shot.exists(), done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return shot.read_bytes(), console


async def _small_run(tmp_path: Path) -> dict[str, object]:
    runner, url, _fleet = await fake_server.start("ok")
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: ASYNC220
    try:
        workload = Workload(targets=(url,), duration=3.0, turns=5, profile=Profile.constant(6), stream_ratio=0.5)
        chaos = (ChaosSpec.parse(f"pause:{victim.pid}@after=1s,for=0.5s"),)
        outcome = await LoadTest(workload, RunOptions(chaos=chaos, quiet=True, grace=5)).run_async()
    finally:
        await runner.cleanup()
        victim.kill()
        victim.wait()
    return build_result(workload, outcome, ["pause"])


async def test_report_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    result = await _small_run(tmp_path)
    page = write_report(result, tmp_path / "report.html")
    html = page.read_text()
    # Self-contained: no script, no stylesheet or image fetched from anywhere.
    assert "<script" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html)
    assert html.count("<svg") == 4
    assert "<td>pause</td>" in html
    png, console = render(page, tmp_path / "report.png", tmp_path)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert console == [], console
    shutil.copy(tmp_path / "report.png", tmp_path / "kept.png")


def test_the_console_check_catches_an_error(tmp_path: Path) -> None:
    # A control: a page with a script error is caught, so the check above can fail.
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('boom'); nope();</script></body></html>")
    _png, console = render(page, tmp_path / "broken.png", tmp_path)
    assert any("boom" in line or "nope" in line for line in console), console
