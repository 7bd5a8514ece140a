"""load_tokenizer picks the class from config.json (local folder or Hub repo); a folder loaded into the wrong class,
or missing a weight, is an error that says what the folder holds."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import VQModel
from helpers import tiny_fvq
from hub_server import HubServer
from safetensors.torch import load_file, save_file

from fullvq_hf import FVQModel, VQGANLCModel, load_tokenizer

TESTS = Path(__file__).resolve().parent
WEIGHTS = "diffusion_pytorch_model.safetensors"


def tiny_lc():
    m = VQGANLCModel.from_preset("tiny", codebook_size=64, codebook_dim=8, codebook_feature_dim=12)
    m.load_codebook(torch.randn(64, 12, generator=torch.Generator().manual_seed(0)))
    return m


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    tiny_fvq().save_pretrained(root / "fvq")
    tiny_lc().save_pretrained(root / "run" / "model")  # a training run: the model in a subfolder
    return root


def test_load_tokenizer_reads_the_class_from_the_config(folders):
    fvq = load_tokenizer(folders / "fvq")
    lc = load_tokenizer(folders / "run", subfolder="model")
    assert type(fvq) is FVQModel and type(lc) is VQGANLCModel
    expected = VQGANLCModel.from_pretrained(folders / "run" / "model")
    assert torch.equal(lc.quantize.frozen_codebook, expected.quantize.frozen_codebook)


@pytest.mark.parametrize(
    "cls,folder,holds",
    [
        (FVQModel, "run/model", r"holds a VQGANLCModel, not a FVQModel.*VQGANLCModel.from_pretrained"),
        (VQGANLCModel, "fvq", r"holds a FVQModel \(quantizer_type='vqbridge'\), not a VQGANLCModel.*FVQModel.from_pretrained"),
    ],
)
def test_wrong_class_is_an_error_that_says_what_the_folder_holds(folders, cls, folder, holds):
    with pytest.raises(ValueError, match=holds):
        cls.from_pretrained(folders / folder)


def test_folder_missing_a_weight_is_an_error(folders, tmp_path):
    for name in ("config.json", WEIGHTS):
        (tmp_path / name).write_bytes((folders / "fvq" / name).read_bytes())
    state = load_file(tmp_path / WEIGHTS)
    del state["decoder.conv_out.weight"]
    save_file(state, tmp_path / WEIGHTS)
    for load in (FVQModel.from_pretrained, load_tokenizer):
        with pytest.raises(ValueError, match=r"incomplete FVQModel folder.*lacks 1 tensor.*decoder\.conv_out\.weight"):
            load(tmp_path)


def test_folders_that_hold_no_tokenizer_of_this_package(tmp_path):
    VQModel(block_out_channels=(8,), norm_num_groups=8, latent_channels=4, num_vq_embeddings=16, vq_embed_dim=4).save_pretrained(
        tmp_path / "vq"
    )
    with pytest.raises(ValueError, match=r"holds a VQModel \(a diffusers VQModel, not a tokenizer"):
        load_tokenizer(tmp_path / "vq")
    with pytest.raises(ValueError, match=r"holds a VQModel.*not a FVQModel"):
        FVQModel.from_pretrained(tmp_path / "vq")
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "llamagen"}))
    with pytest.raises(ValueError, match=r"model_type='llamagen'.*not a tokenizer"):
        load_tokenizer(tmp_path / "gpt")


def test_a_run_folder_points_to_its_model_subfolder(folders):
    with pytest.raises(OSError, match=r"holds a model in model/: pass subfolder='model'"):
        load_tokenizer(folders / "run")


def test_output_loading_info_still_works(folders):
    model, info = FVQModel.from_pretrained(folders / "fvq", output_loading_info=True)
    assert isinstance(model, FVQModel) and info["missing_keys"] == [] and info["unexpected_keys"] == []


CLIENT = """
import json, sys
import torch
from huggingface_hub import HfApi
from fullvq_hf import FVQModel, VQGANLCModel, load_tokenizer

root = sys.argv[1]
api = HfApi()
api.create_repo("me/lc-tokenizer")
api.upload_folder(repo_id="me/lc-tokenizer", folder_path=root + "/run/model")
api.create_repo("me/fvq-run")
api.upload_folder(repo_id="me/fvq-run", folder_path=root + "/fvq", path_in_repo="model")
lc = load_tokenizer("me/lc-tokenizer")
fvq = load_tokenizer("me/fvq-run", subfolder="model", revision="main")
errors = []
for cls, repo, kw in ((FVQModel, "me/lc-tokenizer", {}), (VQGANLCModel, "me/fvq-run", {"subfolder": "model"})):
    try:
        cls.from_pretrained(repo, **kw)
    except ValueError as e:
        errors.append(str(e))
print("@@" + json.dumps({"lc": type(lc).__name__, "fvq": type(fvq).__name__, "errors": errors,
                         "codebook": lc.quantize.frozen_codebook[:2].tolist()}))
"""


def test_hub_ids_load_in_their_own_class(folders, tmp_path):
    """The defect: a VQGAN-LC tokenizer given by Hub id loaded as a randomly initialised FVQModel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    with HubServer() as hub:
        env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN="dummy", HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="0",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
                   PYTHONPATH=os.pathsep.join([str(TESTS.parent), env.get("PYTHONPATH", "")]))  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CLIENT), str(folders)], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("@@")][-1][2:])
    assert out["lc"] == "VQGANLCModel" and out["fvq"] == "FVQModel"
    expected = VQGANLCModel.from_pretrained(folders / "run" / "model").quantize.frozen_codebook[:2]
    assert torch.equal(torch.tensor(out["codebook"]), expected)
    assert len(out["errors"]) == 2
    assert "me/lc-tokenizer holds a VQGANLCModel, not a FVQModel" in out["errors"][0]
    assert "me/fvq-run (subfolder 'model') holds a FVQModel" in out["errors"][1]
