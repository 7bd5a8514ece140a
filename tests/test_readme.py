"""The README's user paths run as written.

Every fenced block preceded by ``<!-- readme-test -->`` in README.md is run, in README order, in one scratch
folder (later blocks use what earlier ones wrote), as a fresh process: ``bash -euo pipefail`` for bash blocks,
this interpreter for python blocks. What a user would download is provided locally:
- the Hub is the loopback server of ``hub_server.py`` (driven by the real huggingface_hub client), holding the
  ``your-org/...`` repos the snippets pull;
- ``vq_ds16_c2i.pt`` and ``c2i_B_256.pt`` are written in LlamaGen's official key layouts (tiny widths, the real
  16,384-code vocabulary and 16 x 16 grid), as ``test_convert*.py`` build them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import randomize_bridge, tiny_fvq
from hub_server import HubServer
from test_convert import llamagen_layout, random_state_dict
from test_convert_llamagen_gpt import official_gpt_state_dict

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- readme-test -->"


def readme_blocks() -> list[tuple[str, str, str]]:
    """(section heading, language, code) of every marked block, in README order."""
    text = (ROOT / "README.md").read_text()
    blocks, heading = [], ""
    pattern = re.compile(r"^(#+ [^\n]*)$|^" + re.escape(MARK) + r"\n```(\w+)\n(.*?)^```", re.M | re.S)
    for match in pattern.finditer(text):
        if match.group(1):
            heading = match.group(1).lstrip("# ").strip()
        else:
            blocks.append((heading, match.group(2), match.group(3)))
    return blocks


def write_official_files(folder: Path) -> None:
    layout = llamagen_layout(
        ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1, z=32, codebook_size=16384, dim=8
    )
    torch.save({"model": random_state_dict(layout)}, folder / "vq_ds16_c2i.pt")
    gpt = official_gpt_state_dict(layers=2, dim=64, vocab=16384, classes=1000)
    gpt["output.weight"] *= 10  # informative logits
    torch.save({"model": gpt}, folder / "c2i_B_256.pt")


def publish_example_repos(folder: Path, env: dict) -> None:
    """``your-org/fvq-fmnist`` (a tokenizer) and ``your-org/llamagen-fmnist`` (a pipeline) on the loopback Hub."""
    from fullvq_hf import LlamaGenConfig, LlamaGenForConditionalGeneration, LlamaGenPipeline

    tokenizer = randomize_bridge(tiny_fvq(sample_size=8, in_channels=1, out_channels=1), seed=1)
    tokenizer.save_pretrained(folder / "fvq-fmnist")
    config = LlamaGenConfig(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            num_classes=10, grid_size=4)  # fmt: skip
    gpt = LlamaGenForConditionalGeneration(config)
    torch.nn.init.normal_(gpt.output.weight, std=0.5)
    LlamaGenPipeline(transformer=gpt, vqvae=tokenizer).save_pretrained(folder / "llamagen-fmnist")
    script = (
        "from fullvq_hf.hub import push_to_hub\n"
        f"push_to_hub({str(folder / 'fvq-fmnist')!r}, 'your-org/fvq-fmnist')\n"
        f"push_to_hub({str(folder / 'llamagen-fmnist')!r}, 'your-org/llamagen-fmnist')\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    setup = tmp_path_factory.mktemp("readme-setup")
    (work / "examples").symlink_to(ROOT / "examples")
    write_official_files(work)
    results = {}
    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(
            HF_ENDPOINT=hub.endpoint,
            HF_TOKEN="dummy",
            HF_HOME=str(setup / "hf-home"),
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            OMP_NUM_THREADS="1",  # tiny models: one thread each is faster than two oversubscribed
        )
        publish_example_repos(setup, env)
        for i, (heading, language, code) in enumerate(readme_blocks()):
            command = (
                ["bash", "-euo", "pipefail", "-c", code]
                if language == "bash"
                else [sys.executable, "-c", code]
            )
            proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
            results[f"{i}: {heading} ({language})"] = proc
        results["hub"] = hub
    results["work"] = work
    return results


def test_the_readme_has_a_tested_snippet_per_user_path():
    headings = {heading for heading, _, _ in readme_blocks()}
    for path in ("Load from the Hub", "Convert official weights", "Fine-tune with accelerate",
                 "Use in a diffusers pipeline", "Push results"):  # fmt: skip
        assert path in headings, f"no tested snippet under a heading {path!r}"


def test_every_snippet_runs(readme_run):
    failures = [
        f"--- {name} exited {proc.returncode}\n{proc.stdout[-1500:]}\n{proc.stderr[-4000:]}"
        for name, proc in readme_run.items()
        if isinstance(proc, subprocess.CompletedProcess) and proc.returncode != 0
    ]
    assert not failures, "\n".join(failures)


def test_snippets_left_what_they_promise(readme_run):
    work, hub = readme_run["work"], readme_run["hub"]
    assert (work / "sample.png").exists()  # pulled pipeline generated an image
    assert (work / "converted" / "llamagen-b-256" / "model_index.json").exists()
    assert (work / "runs" / "vq16-photos" / "model" / "config.json").exists()
    assert (work / "runs" / "gpt-b-photos" / "model" / "model.safetensors").exists()
    pushed = hub.state.repos
    assert "your-org/vq16-photos" in pushed and "your-org/llamagen-b-256" in pushed
