"""The benchmarks' bookkeeping (scripts/bench_search.py, scripts/bench_train.py): what they measure is what they say."""

import json
import re

import pytest

from tests.helpers.scripts import load_script


def _bench():
    return load_script("bench_search")


def test_synthetic_configurations_are_searched_at_their_own_size():
    # `SearchConfig.replace` ignores None, so `resolution=None` there kept the quick
    # preset's 14x14 resize: configuration 0 ran on 14x14 images against a reference at 8x8.
    bench = _bench()
    for index in (0,):
        config = bench.CONFIGS[index]
        searcher = bench.build_searcher(dict(config=config, variant="vinnas", threads=None))
        assert searcher.config.resolution is None and searcher.config.limit is None
        assert bench.searched_image(searcher) == (config["size"], config["size"], config["in_channels"])
        assert searcher.config.batch_size == config["batch"] and searcher.config.layers == config["layers"]


def test_the_floor_fraction_and_the_sweep_grid():
    bench = _bench()
    # 2 GFLOP at 40 GFLOP/s is 50 ms of floor; a 200 ms step reaches a quarter of it.
    assert bench.floor_fraction(200.0, 2e9, 40.0) == pytest.approx(0.25)
    points = bench.sweep_configs()
    assert len(points) == 3 * 3 * 2 and len({p["name"] for p in points}) == len(points)
    assert {(p["layers"], p["channels"], p["batch"]) for p in points} == {
        (l, c, b) for l in (3, 5, 8) for c in (4, 8, 16) for b in (32, 64)}


def test_the_sweep_table_and_plot_come_from_the_results_lines(tmp_path):
    bench = _bench()
    rows = []
    for layers in (3, 5):
        for variant, step in (("vinnas", 100.0 * layers), ("reference", 300.0 * layers)):
            rows.append({"config": f"{layers}c", "variant": variant, "layers": layers, "channels": 4, "batch": 32,
                         "step_ms": step, "images_per_s": 64e3 / step, "first_step_s": 10.0 + layers,
                         "peak_rss_mb": 900.0, "ratio_vs_reference": 3.0 if variant == "vinnas" else 1.0,
                         "step_gflop": 0.5, "floor_fraction": 0.05, "gemm_gflops": 48.0, "threads": 2,
                         "load": "0 0 0", "date": f"2026-12-02 1{layers}:00:00"})
    text = bench.render_sweep(json.loads(json.dumps(rows)), {"cpu": "test CPU"})
    assert "| 3 | 4 | 32 | 300 / 900 | 3.00 | 13.0 / 13.0 | 900 / 900 | 0.500 | 5.0% / 5.0% |" in text
    assert "| 5 | 4 | 32 | 500 / 1500 |" in text
    doc = tmp_path / "BENCH.md"
    doc.write_text("# Benchmarks\n\nkept\n")
    bench.write_sweep_doc(str(doc), text)
    bench.write_sweep_doc(str(doc), text)  # replaced in place, not appended twice
    written = doc.read_text()
    assert written.count(bench.SWEEP_BEGIN) == 1 and "kept" in written
    bench.sweep_plot(rows, str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_default_prune_path_prunes_half_and_times_both_steps():
    # The benchmark's half-pruned timing (its default path): the search's own pruning
    # check and re-trace decision, then the two steps timed alternately.
    bench = _bench()
    config = dict(name="tiny", layers=1, channels=4, batch=8, size=8, in_channels=1, data="synthetic")
    result = bench._tfvnas_child(dict(config=config, variant="vinnas", threads=None, warmup=0, steps=1,
                                      prune=True))
    searcher_gates = 2 * 14 * 7  # two tables of 14 edges x 7 ops
    # Half of each table was pushed over the threshold; the per-node floor holds what a node needs.
    assert searcher_gates // 2 - 16 <= result["pruned_gates"] <= searcher_gates // 2
    assert result["active_gates"] == searcher_gates - result["pruned_gates"]
    assert result["retraced"] is True
    assert result["step_ms_start"] > 0 and result["step_ms_half_pruned"] > 0


def test_the_training_benchmark_variants_map_to_config_fields_and_a_misspelt_one_fails_first():
    bench_train = load_script("bench_train")
    c = bench_train.CONFIGS["paper-like"]
    fields = bench_train.train_fields("sparse+xla+bf16", c)
    assert (fields["weight_vd"], fields["jit_compile"], fields["precision"]) == (True, True, "mixed_bfloat16")
    assert (fields["layers"], fields["channels"], fields["batch_size"]) == (8, 16, 64)
    dense = bench_train.train_fields("dense", c)
    assert not dense["weight_vd"] and "jit_compile" not in dense and "precision" not in dense
    from tfvnas import config as config_lib

    config_lib.TRAIN_PRESETS["quick"].replace(**fields)  # every field is one the training config has
    for bad in ("sparse+xl", "fast", "dense+bf16+fp8"):
        with pytest.raises(SystemExit, match=f"received '{re.escape(bad)}'"):
            bench_train.train_fields(bad, c)
    with pytest.raises(SystemExit, match="received 'dense\\+xl'"):
        bench_train.main(["--variants", "dense,dense+xl", "--doc", "", "--results", ""])


def test_the_roofline_is_the_larger_of_compute_and_memory_time():
    roofline_ms = load_script("bench_train").roofline_ms
    assert roofline_ms(2e9, 1e9, gflops=40, bandwidth=10) == pytest.approx(100.0)  # memory: 1 GB at 10 GB/s
    assert roofline_ms(8e9, 1e8, gflops=40, bandwidth=10) == pytest.approx(200.0)  # compute: 8 GFLOP at 40/s


def test_a_table_is_written_between_its_markers_or_appended(tmp_path):
    write_doc, begin, end = _bench().write_doc, "<!-- t:begin -->", "<!-- t:end -->"
    new = tmp_path / "sub" / "new.md"
    write_doc(str(new), f"{begin}\none\n{end}", begin, end)
    assert new.read_text() == f"{begin}\none\n{end}\n"
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\ntext\n")
    write_doc(str(doc), f"{begin}\none\n{end}", begin, end)
    assert doc.read_text() == f"# Title\n\ntext\n\n{begin}\none\n{end}\n"
    write_doc(str(doc), f"{begin}\ntwo\n{end}", begin, end)  # replaced in place, the rest kept
    assert doc.read_text() == f"# Title\n\ntext\n\n{begin}\ntwo\n{end}\n"
