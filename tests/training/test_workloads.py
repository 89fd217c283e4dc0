"""Trace loading, chronological splits, generators and the training mix's provenance.

The real public traces are read from ``$RLSCALE_TRACES_DIR`` (default ``<repo>/../shared/traces``);
they are never copied into the repository.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from rlscale.training.workloads import (
    MONDAY_EPOCH_S,
    PATTERNS,
    TRACE_STEP_S,
    Trace,
    TraceFormatError,
    diurnal,
    flash_crowds,
    generate,
    load_trace,
    traces_dir,
    training_mix,
    weekly,
    write_trace,
)

# Rows and SHA-256 as published in the traces' README.
REAL_TRACES = {
    "nasa_http_1995-07-09_7d_1min.csv": (10080, "33c212cfae536c850edd8d2120d6361b11c59798295e01c4095e01cac4b19dae"),
    "worldcup98_1998-06-24_7d_1min.csv": (10080, "801e62acaa1101b1ae3b6256db1f5eb742f469c52cfffbcc6520c83740a564eb"),
    "alibaba2018_cluster_cpu_day3-8_1min.csv": (
        8639,
        "bd07d528e068e17145d1484da3dcc05f597ed6d10d0ff2059492bebcbf5b52d4",
    ),
    "azure_functions_2019_sample1350fn_1d_1min.csv": (
        1440,
        "952eb580a4f83b1796b218ff1f8b7d6a04e33f7301b6e4d3da568612ea983dec",
    ),
    "azure_functions_2019_single_fn_1d_1min.csv": (
        1440,
        "6e1a7b7905dcfd393b1f6d1bd9ae8063c66993ac8b5a7f0e9dbe4b988e58777d",
    ),
}


@pytest.fixture(scope="module")
def traces() -> Path:
    path = traces_dir()
    if not path.is_dir():
        pytest.skip(f"public traces not found at {path} (set RLSCALE_TRACES_DIR; see docs/simulator.md)")
    return path


@pytest.mark.parametrize("filename", sorted(REAL_TRACES))
def test_real_traces_load_with_published_rows_and_hash(traces: Path, filename: str) -> None:
    rows, sha = REAL_TRACES[filename]
    trace = load_trace(traces / filename)
    assert len(trace) == rows
    assert trace.sha256 == sha
    assert trace.source == str(traces / filename)
    assert np.all(np.isfinite(trace.values)) and trace.values.min() >= 0


def test_real_trace_values_match_the_file(traces: Path) -> None:
    trace = load_trace(traces / "nasa_http_1995-07-09_7d_1min.csv")
    # README: min 0, mean 54.06, max 405 requests/minute.
    assert trace.values.min() == 0
    assert trace.values.max() == 405
    assert trace.values.mean() == pytest.approx(54.06, abs=0.01)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("time,value\n0,1\n60,2\n", ":1:", "header"),
        ("", ":1:", "header"),
        ("t_seconds,value\n0,1\n60,2\n180,3\n", ":4:", "expected 120, got 180"),
        ("t_seconds,value\n60,1\n120,2\n", ":2:", "must start at 0"),
        ("t_seconds,value\n0,1\n60,abc\n", ":3:", "'abc' is not a number"),
        ("t_seconds,value\n0,1\n60,-4\n", ":3:", ">= 0"),
        ("t_seconds,value\n0,1\n60,nan\n", ":3:", "finite"),
        ("t_seconds,value\n0,1\n60,inf\n", ":3:", "finite"),
        ("t_seconds,value\n0,1,2\n60,1\n", ":2:", "expected 2 fields"),
        ("t_seconds,value\nzero,1\n60,1\n", ":2:", "t_seconds 'zero' is not a number"),
        ("t_seconds,value\n0,1\n", "", "at least 2 data rows"),
    ],
)
def test_bad_trace_files_name_the_line_and_problem(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TraceFormatError) as err:
        load_trace(path)
    message = str(err.value)
    assert message.startswith(str(path))
    assert where in message
    assert what in message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="cannot read trace file"):
        load_trace(tmp_path / "nope.csv")


def test_good_file_with_blank_trailing_line_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbft_seconds,value\n0,1.5\n60,2\n120,0\n\n")
    trace = load_trace(path, start_s=1000.0)
    assert trace.values.tolist() == [1.5, 2.0, 0.0]
    assert trace.start_s == 1000.0
    assert trace.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_is_chronological_and_covers_everything() -> None:
    trace = Trace(name="t", values=np.arange(100, dtype=float), start_s=0.0)
    split = trace.split(0.7, 0.15, 0.15)
    assert split["train"].values.tolist() == list(range(70))
    assert split["validation"].values.tolist() == list(range(70, 85))
    assert split["test"].values.tolist() == list(range(85, 100))
    assert split["all"].values.tolist() == list(range(100))
    assert split.test.first_row == 85
    assert split.test.start_s == 85 * TRACE_STEP_S  # each window keeps the trace's clock
    assert split.test.window == "test"
    assert split.test.provenance()["rows"] == [85, 100]
    assert set(split) == {"train", "validation", "test", "all"}


def test_split_fits_the_load_reference_on_the_training_window() -> None:
    values = np.r_[np.full(70, 10.0), np.full(30, 50.0)]
    split = Trace(name="t", values=values).split()
    assert Trace(name="t", values=values).reference_p95 is None
    assert {w: split[w].reference_p95 for w in split} == dict.fromkeys(split, 10.0)
    assert split.test.provenance()["reference_p95"] == 10.0


def test_split_rejects_bad_fractions_and_unknown_windows() -> None:
    trace = Trace(name="t", values=np.ones(10))
    with pytest.raises(ValueError, match="must be 1"):
        trace.split(0.5, 0.2, 0.2)
    with pytest.raises(ValueError, match="test must be in"):
        trace.split(0.9, 0.2, -0.1)
    with pytest.raises(ValueError, match="would be empty"):
        Trace(name="t", values=np.ones(3)).split(0.9, 0.05, 0.05)
    with pytest.raises(KeyError, match="choose one of train, validation, test, all"):
        trace.split()["holdout"]


def test_trace_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="finite and >= 0"):
        Trace(name="t", values=np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        Trace(name="t", values=np.array([]))


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_generators_are_seeded_and_non_negative(pattern: str) -> None:
    a = generate(pattern, 3 * 1440, seed=1)
    b = generate(pattern, 3 * 1440, seed=1)
    c = generate(pattern, 3 * 1440, seed=2)
    assert np.array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    assert len(a) == 3 * 1440
    assert a.values.min() >= 0 and np.all(np.isfinite(a.values))
    assert a.start_s == MONDAY_EPOCH_S
    assert a.kind == "generated" and a.params["pattern"] == pattern


def test_diurnal_has_a_daily_period_and_the_requested_trough() -> None:
    x = diurnal(7 * 1440, np.random.default_rng(0), trough=0.2, peak_hour=14.0)
    assert x.max() == pytest.approx(1.0, abs=1e-3)
    assert x.min() == pytest.approx(0.2, abs=1e-3)
    assert int(np.argmax(x[:1440])) == pytest.approx(14 * 60, abs=1)
    assert np.allclose(x[:1440], x[1440:2880])


def test_weekly_lowers_weekends_only() -> None:
    x = weekly(7 * 1440, np.random.default_rng(0), weekend=0.5)
    day = np.arange(7 * 1440) // 1440
    assert np.allclose(x[(day <= 3)], 1.0)  # Monday..Thursday untouched
    assert np.allclose(x[(day == 5) | (day == 6)][120:-120], 0.5)  # Saturday, Sunday (past the easing)


def test_flash_crowds_multiply_load_suddenly() -> None:
    x = flash_crowds(7 * 1440, np.random.default_rng(3), per_day=1.0, magnitude=(5.0, 6.0))
    assert x.min() >= 1.0
    assert x.max() >= 4.0
    # At least one surge rises by >2x within 20 minutes.
    rise = x[20:] / x[:-20]
    assert rise.max() > 2.0


def test_training_mix_records_generated_and_train_windows_only(traces: Path) -> None:
    path = traces / "nasa_http_1995-07-09_7d_1min.csv"
    mix = training_mix(5, n_generated=3, n_steps=1440, extra_traces=[path])
    assert len(mix) == 4
    nasa = mix.loads[-1]
    assert nasa.window == "train"
    assert len(nasa) == round(10080 * 0.7)
    series = mix.provenance["series"]
    assert [s["kind"] for s in series] == ["generated", "generated", "generated", "file"]
    assert series[-1]["path"] == str(path)
    assert series[-1]["window"] == "train"
    assert series[-1]["rows"] == [0, 7056]
    assert series[-1]["sha256"] == REAL_TRACES[path.name][1]
    assert mix.provenance["seed"] == 5
    # Nothing of the held-out windows is in the mix.
    test_window = load_trace(path).split().test
    assert nasa.first_row + len(nasa) <= test_window.first_row
    # Deterministic in its seed.
    again = training_mix(5, n_generated=3, n_steps=1440, extra_traces=[path])
    assert all(np.array_equal(a.values, b.values) for a, b in zip(mix, again, strict=True))


def test_training_mix_refuses_to_train_on_other_windows() -> None:
    with pytest.raises(ValueError, match="'train' window"):
        training_mix(0, n_generated=1, n_steps=100, extra_window="test")  # type: ignore[arg-type]


def test_unknown_pattern_is_named() -> None:
    with pytest.raises(ValueError, match="unknown pattern 'sine'"):
        generate("sine", 100, 0)


def test_write_trace_round_trips(tmp_path: Path) -> None:
    values = np.array([0, 3, 12.5, 7])
    path = write_trace(tmp_path / "t.csv", values)
    assert path.read_text().splitlines()[:3] == ["t_seconds,value", "0,0", "60,3"]
    np.testing.assert_array_equal(load_trace(path).values, values)
    with pytest.raises(ValueError, match="finite and >= 0"):
        write_trace(tmp_path / "bad.csv", [1.0, -2.0])


def test_real_trace_round_trips_byte_for_byte(traces: Path, tmp_path: Path) -> None:
    source = traces / "worldcup98_1998-06-24_7d_1min.csv"
    copy = write_trace(tmp_path / "copy.csv", load_trace(source).values)
    assert copy.read_bytes() == source.read_bytes()
