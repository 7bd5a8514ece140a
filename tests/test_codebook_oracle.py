"""benchmarks/codebook_oracle.py: which train images a finished run trained on."""

import json
from pathlib import Path

import pytest
import torch
from helpers import benchmark_module


@pytest.fixture(scope="module")
def oracle():
    yield from benchmark_module("codebook_oracle")


def fake_run(tmp_path: Path, steps: int, global_batch: int, seed: int = 3, **config) -> Path:
    config = {"seed": seed, "dataset": "fashion_mnist", "streaming": False, **config}
    (tmp_path / "training_config.json").write_text(json.dumps(config))
    (tmp_path / "results.json").write_text(json.dumps({"step": steps, "global_batch_size": global_batch}))
    return tmp_path


def test_seen_images_are_the_first_positions_of_the_epoch_permutation(oracle, tmp_path):
    from fullvq_hf.data.images import StepBatchSampler

    seen = oracle.seen_images(fake_run(tmp_path, steps=3, global_batch=4), num_images=100)
    assert len(seen) == 12 and seen.unique().numel() == 12 and bool((seen[1:] > seen[:-1]).all())
    # the trainer's sampler for one process of batch 2 (two processes of the same global batch see the same images)
    first = [i for batch in StepBatchSampler(100, 2, num_processes=2, process_index=0, seed=3, total_steps=3) for _, i in batch]
    second = [i for batch in StepBatchSampler(100, 2, num_processes=2, process_index=1, seed=3, total_steps=3) for _, i in batch]
    assert sorted(first + second) == seen.tolist()
    other_seed = oracle.seen_images(fake_run(tmp_path, steps=3, global_batch=4, seed=4), num_images=100)
    assert not torch.equal(other_seed, seen)


def test_seen_images_past_an_epoch_are_all_of_them_and_streams_are_unknown(oracle, tmp_path):
    assert oracle.seen_images(fake_run(tmp_path, steps=6, global_batch=4), num_images=20).tolist() == list(range(20))
    assert oracle.seen_images(fake_run(tmp_path, steps=2, global_batch=4, streaming=True), num_images=20) is None
    assert oracle.seen_images(fake_run(tmp_path, steps=2, global_batch=4, dataset="photos"), num_images=20) is None
