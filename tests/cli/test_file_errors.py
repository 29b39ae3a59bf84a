"""A file error names the file, and an output file is checked before a long command runs
(review: ``cluster up --dir afile/sub`` said only ``Not a directory``; ``demo --report
afile/r.md`` failed only after the whole demo had run)."""

from __future__ import annotations

from pathlib import Path

from pbkv.cli.main import os_error_text
from tests.cli.helpers import UNREACHABLE, one_line, run_pbkv


def test_an_os_error_names_its_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    line = one_line(run_pbkv("cluster", "up", "--dir", str(afile / "sub")))
    assert line == f"pbkv: error: Not a directory: {afile / 'sub'}"
    missing = tmp_path / "missing" / "trace.jsonl"
    line = one_line(run_pbkv("sim", "--seed", "1", "--ops", "1", "--trace", str(missing)))
    assert line == f"pbkv: error: No such file or directory: {missing}"
    renamed = OSError(2, "No such file or directory", "a", None, "b")
    assert os_error_text(renamed) == "No such file or directory: a -> b"
    assert os_error_text(OSError("no file")) == "no file"


def test_an_unwritable_report_or_plot_is_refused_before_anything_runs(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    demo_dir = tmp_path / "demo"
    line = one_line(
        run_pbkv("demo", "basic", "--report", str(afile / "r.md"), "--dir", str(demo_dir))
    )
    assert f"--report': cannot write {afile / 'r.md'}: Not a directory" in line
    assert not demo_dir.exists()  # no cluster was started
    plot = tmp_path / "missing" / "p.svg"
    line = one_line(run_pbkv("bench", "--plot", str(plot), "--viewserver", UNREACHABLE))
    assert f"--plot': cannot write {plot}: No such file or directory" in line
    report = tmp_path / "r.md"  # writable: checked (created), then removed again
    assert run_pbkv("demo", "--report", str(report), "--clients", "99").returncode == 2
    assert not report.exists()
