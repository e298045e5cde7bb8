"""The benchmark runs end to end on tiny sizes and its FLOP counts match a hand count."""

import math

import torch

from vaestudy.bench import mlp_flops, run_bench, synthetic_levels


def test_flop_count_of_the_benchmark_mlp():
    # encoder 784*500 + 500*500 + 500*40, decoder 20*500 + 500*500 + 500*784, two FLOPs per multiply-add
    forward = 2 * (784 * 500 + 500 * 500 + 500 * 40 + 20 * 500 + 500 * 500 + 500 * 784)
    counts = mlp_flops(1)
    assert counts["forward"] == forward
    assert counts["step"] == 3 * forward - 2 * 784 * 500  # no input gradient for the first layer
    assert counts["decoder_per_sample"] == 2 * (20 * 500 + 500 * 500 + 500 * 784)


def test_synthetic_data_has_mnist_shape_and_levels():
    levels = synthetic_levels(60)
    assert (
        levels.train.shape == (60, 1, 28, 28) and levels.train.dtype == torch.uint8 and levels.levels == 256
    )
    assert 0 < float(levels.train.float().mean()) < 255


def test_the_benchmark_table_is_complete_and_consistent(tmp_path):
    rows = run_bench(
        torch.device("cpu"),
        train_images=256,
        repeats=1,
        iwae_images=2,
        k=20,
        max_elements=2**16,
        out_csv=tmp_path / "bench.csv",
    )
    measures = [r["measure"] for r in rows]
    assert measures[0] == "trainer images/s vs textbook loop" and len(rows) == 5
    for r in rows[:3]:
        assert r["value"] > 0 and r["reference"] > 0
        assert math.isclose(r["ratio"], r["value"] / r["reference"], rel_tol=1e-9)
    assert (tmp_path / "bench.csv").read_text().count("\n") == 6
