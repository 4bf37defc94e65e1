"""The docstring examples run, and `python -m crossentropy` does its job."""

import doctest
import io
import json
import subprocess
import sys

import pytest

import crossentropy
from crossentropy import __main__ as main_module
from crossentropy import _api, _config, _kernels, _shards


@pytest.mark.parametrize("module", [crossentropy, _api, _config, _shards],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_main_trains_and_compares_speed():
    out = io.StringIO()
    assert main_module.main(["--samples", "500", "--classes", "20", "--features", "8",
                             "--steps", "20", "--repeats", "2"], out=out) == 0
    text = out.getvalue()
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    losses = [float(row[1]) for row in rows]
    assert losses == sorted(losses, reverse=True), text   # the loss never rises
    assert losses[-1] < 0.9 * losses[0], text             # and falls
    assert "numpy (textbook)" in text and "crossentropy" in text


def test_main_speed_line_names_the_threads_and_kernels_that_ran():
    out = io.StringIO()
    # 500 x 20 is one chunk of rows: one thread runs whatever is asked
    main_module.compare_speed(main_module.parse_args(
        ["--samples", "500", "--classes", "20", "--threads", "2", "--repeats", "2"]), out)
    assert f"1 thread, {_kernels.dispatch_target()} kernels" in out.getvalue()


def test_main_runs_as_a_module_and_has_help():
    done = subprocess.run([sys.executable, "-m", "crossentropy", "--help"],
                          capture_output=True, text=True, check=True)
    assert "--classes" in done.stdout and "--threads" in done.stdout


def test_main_rejects_bad_options():
    with pytest.raises(SystemExit):
        main_module.parse_args(["--classes", "0"])


def in_process(peer, shape, dtype, n_threads, seconds):
    from crossentropy import _benchmark
    return _benchmark.time_here(peer, shape, dtype, n_threads, seconds)["ms"]


def test_benchmark_reports_every_peer_shape_and_thread_count():
    from crossentropy import _benchmark
    peers = ("crossentropy", "numpy", "copy")
    results = _benchmark.run([((64, 10), "float32"), ((8, 200), "float64")], [1, 2],
                             processes=2, seconds=0.01, peers=peers, timer=in_process,
                             log=io.StringIO())
    assert [r["shape"] for r in results] == [[64, 10], [8, 200]]
    for r in results:
        assert set(r["ms"]) == set(peers)
        for name in peers:
            for n in ("1", "2"):
                t = r["ms"][name][n]
                assert 0 < t["min"] <= t["median"] <= t["max"]
        # the single-threaded peers are timed once and stand for both counts
        assert r["ms"]["copy"]["1"] == r["ms"]["copy"]["2"]
        assert set(r["ratios"]) == {"vs_numpy", "per_copy", "speedup_from_threads"}
        assert r["ratios"]["speedup_from_threads"]["1"]["median"] == 1.0
        assert r["grad_relative_error"]["crossentropy"] < 1e-5
        assert set(r["allocated_bytes"]) == {"new", "out=", "inplace"}
    table = _benchmark.table(results, [1, 2])
    assert table.count("\n") == 1 + 2 * 2
    assert "crossentropy ms" in table and "torch" not in table


def test_benchmark_drops_a_peer_whose_process_fails():
    from crossentropy import _benchmark

    def timer(peer, *args):
        if peer == "numpy":
            raise RuntimeError("numpy 64x10 float32 at 1 thread(s) failed:\nit broke")
        return in_process(peer, *args)
    failed, log = {}, io.StringIO()
    results = _benchmark.run([((64, 10), "float32")], [1], processes=2, seconds=0.01,
                             peers=("crossentropy", "numpy", "copy"), timer=timer,
                             log=log, failed=failed)
    assert failed == {"numpy": "numpy 64x10 float32 at 1 thread(s) failed:"}
    assert set(results[0]["ms"]) == {"crossentropy", "copy"}
    assert "dropping numpy" in log.getvalue()


def test_benchmark_times_each_peer_in_a_process_of_its_own():
    from crossentropy import _benchmark
    ms = _benchmark.time_alone("crossentropy", (64, 10), "float32", 1, 0.01)
    assert 0 < ms < 1000
    with pytest.raises(RuntimeError, match="unknown implementation"):
        _benchmark.time_alone("nonesuch", (64, 10), "float32", 1, 0.01)


def test_bench_says_what_it_skipped_and_where_it_wrote(tmp_path, monkeypatch, capsys):
    from crossentropy import _benchmark
    monkeypatch.setattr(_benchmark, "why_missing",
                        lambda peer: "jax not installed" if peer == "jax" else None)
    monkeypatch.setattr(_benchmark, "time_alone", in_process)
    monkeypatch.setattr(_benchmark, "QUICK_SHAPES", [((64, 10), "float32")])
    assert _benchmark.main(["--quick", "--peers", "jax", "numpy", "--threads", "1",
                            "--seconds", "0.01", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "skipping jax: jax not installed" in out.err
    assert "Skipped: jax (jax not installed)" in out.out
    assert f"Results written to {tmp_path}" in out.out
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["skipped"] == {"jax": "jax not installed"} and report["failed"] == {}
    assert set(report["results"][0]["ms"]) == {"crossentropy", "numpy", "copy"}


def test_bench_options():
    assert main_module.parse_args(["--bench", "--quick"]).bench
    with pytest.raises(SystemExit):
        main_module.parse_args(["--quick"])


def test_show_config_says_what_was_built_and_what_runs(capsys):
    config = crossentropy.show_config(mode="dicts")
    build = _kernels.build_config()
    assert config["crossentropy"] == crossentropy.__version__
    assert config["compiler"] == build["compiler"] and build["compiler"].split()[0] in (
        "GCC", "clang", "MSVC", "a")
    assert config["OpenMP"]["build"] == build["openmp"]
    assert (config["OpenMP"]["version"] is None) == (build["openmp"] == "none")
    assert config["SIMD"]["level running"] == _kernels.dispatch_target()
    assert config["SIMD"]["levels compiled"] == _kernels.dispatch_levels()
    assert crossentropy.show_config() is None
    printed = capsys.readouterr().out
    assert f"compiler: {build['compiler']}" in printed
    assert f"level running: {_kernels.dispatch_target()}" in printed
    with pytest.raises(ValueError, match="mode must be 'stdout' or 'dicts'"):
        crossentropy.show_config(mode="json")
