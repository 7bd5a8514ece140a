"""The usage study's mapping from a method to trainer options (benchmarks/usage_study.py)."""

import pytest
from helpers import benchmark_module

from fullvq_hf.training.config import make_config
from fullvq_hf.training.tokenizer_trainer import build_model, code_restart_threshold


@pytest.fixture(scope="module")
def study():
    yield from benchmark_module("usage_study")


@pytest.mark.parametrize("batch, expected", [(64, [32.0, 8.0, 2.0]), (32, [16.0, 4.0, 1.0])])
def test_even_share_threshold_is_the_same_share_at_every_k(study, tmp_path, batch, expected):
    args = study.parse_args(["--batch-size", str(batch)])
    opts = [study.run_options("fvq-e", k, "annealing", 400, 0, args, tmp_path, None) for k in (16384, 65536, 262144)]
    assert all(o["code_restart_share"] == 1.28 and "code_restart_threshold" not in o for o in opts)
    assert all(o["code_restart_every"] == 1 and o["code_restart_window"] == 100 for o in opts)
    # the trainer turns the share into exactly the thresholds the study's fvq-e rows were measured with
    configs = [make_config(o) for o in opts]
    assert [code_restart_threshold(cfg, build_model(cfg)) for cfg in configs] == expected
    assert [o["bridge"] for o in opts] == ["S/4", "S/8", "S/8"]
    fixed = study.run_options("fvq-c", 16384, "annealing", 400, 0, args, tmp_path, None)
    assert fixed["code_restart_threshold"] == 2.0


def test_methods_without_code_restarts_get_none(study, tmp_path):
    args = study.parse_args([])
    for method in ("vq", "simvq", "fvq", "fvq-r", "fvq-dit"):
        assert "code_restart_every" not in study.run_options(method, 4096, "annealing", 50, 0, args, tmp_path, None)


def test_tracking_row_is_the_even_share_row_plus_code_tracking(study, tmp_path):
    args = study.parse_args([])
    for k in (16384, 65536, 262144):
        even = study.run_options("fvq-e", k, "annealing", 400, 0, args, tmp_path / "e", None)
        tracked = study.run_options("fvq-t", k, "annealing", 400, 0, args, tmp_path / "t", None)
        assert tracked.pop("code_track_rate") == 0.1
        assert "code_track_rate" not in even
        assert {o: v for o, v in tracked.items() if o != "output_dir"} == {
            o: v for o, v in even.items() if o != "output_dir"
        }
