"""The report of a real sweep: files, a real browser rendering it, and the edge cases."""

from __future__ import annotations

import re
import shutil
import subprocess

import optuna
import pytest

from sweeper.cli import main

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=15000",
]


@pytest.fixture(scope="module")
def reported(swept):
    _, directory = swept
    assert main(["report", str(directory)]) == 0
    return directory


def test_report_writes_every_file(reported):
    for name in ("report.html", "pareto.png", "breakdown.png", "summary.md"):
        assert (reported / name).stat().st_size > 1000, name
    for name in ("pareto.png", "breakdown.png"):
        assert (reported / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (reported / "summary.md").read_text()
    assert "in-process ONNX Runtime, batch 1, fp32 (median of 200 runs)" in summary
    assert "baseline: #0 mbs=8 delay=20000us" in summary
    assert "the largest part is queueing" in summary, (
        "the 20 ms delay is the baseline's largest part, as in the article"
    )
    assert "Measured by builtin (3 trials)" in summary and "## Batching" in summary
    assert not list(reported.glob(".*.tmp")), "every file is written atomically"


def test_report_is_self_contained(reported):
    page = (reported / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=", page), "no external scripts: the page must open offline"
    assert not re.search(r"<link[^>]+href=[\"']https?:", page), "no external style sheets"
    assert "Plotly.newPlot" in page and "plotly.js v" in page  # the library itself is inline
    for words in (
        "Pareto front",
        "Where the latency goes",
        "Hypervolume history",
        "average batch size",
        "Load generator",
    ):
        assert words in page


def _chromium() -> str:
    found = shutil.which("chromium")
    assert found, "Chromium is required (scripts/setup-system.sh installs Debian's package 'chromium')"
    return found


@pytest.mark.browser
def test_report_renders_in_a_real_browser(reported, tmp_path):
    url = (reported / "report.html").as_uri()
    dom = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console
    # plotly draws an <svg class="main-svg"> into each figure's div once it has rendered.
    for figure in ("pareto", "breakdown", "hypervolume"):
        body = re.search(rf'<div id="{figure}".*?</div>\s*</div>', dom.stdout, re.S)
        assert body and 'class="main-svg"' in body.group(0), f"{figure} did not render"
    screenshot = tmp_path / "report.png"
    shot = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            "--hide-scrollbars",
            "--window-size=1280,2400",
            f"--screenshot={screenshot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000


def test_report_of_a_study_without_completed_trials(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    empty = optuna.create_study(study_name="empty", storage=f"sqlite:///{folder / 'study.db'}", directions=["minimize"])
    assert main(["report", str(folder)]) == 2
    assert "is not a triton-sweeper study" in capsys.readouterr().err, "a plain Optuna study is not read as one"
    empty.set_user_attr("objectives", ["p50_ms@c1"])
    assert main(["report", str(folder)]) == 2
    assert "has no completed trial yet" in capsys.readouterr().err


def test_report_of_a_running_study_says_so(reported, tmp_path, capsys):
    folder = tmp_path / "e2e"
    shutil.copytree(reported, folder, ignore=shutil.ignore_patterns("trials", "backends"), symlinks=True)
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{folder / 'study.db'}")
    study.ask()  # a trial that has started and not finished, as in a study still running
    assert main(["report", str(folder)]) == 0
    assert "1 trial(s) still running" in capsys.readouterr().out
    assert "1 trial(s) still running" in (folder / "report.html").read_text()
    assert "1 trial(s) still running" in (folder / "summary.md").read_text()
