"""Push and pull through the REAL huggingface_hub client against a loopback Hub (tests/hub_server.py).

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HOME at import time and conftest.py makes this process
offline, so every client runs in a fresh interpreter (``hub_client``) while the server runs here. Starting one
costs ~8 s (torch + diffusers imports), so the cases are batched: one interpreter pushes every case and pulls
them into a fresh cache, a second one loads them again by repo id from that cache with HF_HUB_OFFLINE=1 and no
Hub. Adding a checkpoint kind (e.g. the LlamaGen generator or pipeline) is one more ``Case`` in ``CASES`` with
its own ``probe``.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import randomize_bridge, tiny_fvq
from hub_probes import probe_generator, probe_pipeline, probe_tokenizer  # noqa: F401 (the cases name them)
from hub_server import HubServer
from safetensors.torch import load_file

from fullvq_hf.hub import detect_kind, push_to_hub, render_model_card

TESTS = Path(__file__).resolve().parent
RESULT_MARK = "@@hub-client-result@@"
FVQ, LC = "fullvq_hf:FVQModel", "fullvq_hf:VQGANLCModel"
GPT, PIPE = "fullvq_hf:LlamaGenForConditionalGeneration", "fullvq_hf:LlamaGenPipeline"


# ---------------------------------------------------------------------------------------------------- clients
def hub_client(
    script: str, *, endpoint: str | None, hf_home: Path, offline: bool = False, args=(), timeout=300,
    python: str | Path = sys.executable, package: bool = True, cwd: Path = TESTS.parent,
):  # fmt: skip
    """Run ``script`` in a fresh Python as a Hub client of ``endpoint`` (None: nowhere) with its own HF_HOME;
    return what it passed to ``emit(obj)`` (JSON). A failing client fails the test with its stderr.

    ``package=False``: only tests/ on PYTHONPATH (run it with a ``python`` that cannot import fullvq_hf)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "PYTHON"))}
    env.update(
        HF_ENDPOINT=endpoint or "http://127.0.0.1:9",  # port 9 (discard): nothing listens there
        HF_TOKEN="dummy",
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=os.pathsep.join([str(TESTS), *([os.environ.get("PYTHONPATH", "")] if package else [])]),
    )
    prelude = f"import json\ndef emit(obj):\n    print({RESULT_MARK!r} + json.dumps(obj), flush=True)\n"
    proc = subprocess.run(
        [str(python), "-c", prelude + textwrap.dedent(script), *args],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )  # fmt: skip
    if proc.returncode != 0:
        raise AssertionError(
            f"hub client exited with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
        )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    return None


def load_object(name: str):
    module, attr = name.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class Case:
    """One checkpoint on the Hub: how it is pushed, how it is pulled, and which local folder holds the same model.

    push: "model" = ``Cls.from_pretrained(src).push_to_hub(repo_id)`` (diffusers' own), "hub" =
    ``fullvq_hf.hub.push_to_hub(src, repo_id)``, "hub-object" = the same with the loaded model object,
    "cli" = ``fullvq push src repo_id``, None = pushed by an earlier case.
    """

    name: str
    repo_id: str
    cls: str
    push: str | None
    src: str | None  # folder pushed, relative to the sources root
    ref: str  # folder holding the model that from_pretrained(repo_id, **pull) must give back
    push_kwargs: dict = field(default_factory=dict)
    pull: dict = field(default_factory=dict)
    probe: str = "hub_probes:probe_tokenizer"


LC_RESULTS = {"usage": 0.5, "psnr": 20.25, "num_images": 16}
DEV, CLI_FLAGS = {"revision": "dev"}, {"private": True, "commit_message": "2 steps of cpu-tiny"}
CASES = [
    Case("fvq", "org/fvq-tiny", FVQ, "model", "fvq", "fvq"),
    Case("vqgan-lc", "org/vqgan-lc-tiny", LC, "model", "lc", "lc", push_kwargs={"results": LC_RESULTS}),
    Case("sub-fvq", "org/pipeline-tiny", FVQ, "hub", "pipe", "pipe/vqvae", pull={"subfolder": "vqvae"}),
    Case("sub-lc", "org/pipeline-tiny", LC, None, None, "pipe/lc_vqvae", pull={"subfolder": "lc_vqvae"}),
    Case("revision-main", "org/branches", FVQ, "hub-object", "rev-main", "rev-main"),
    Case("revision-dev", "org/branches", FVQ, "hub", "rev-dev", "rev-dev", push_kwargs=DEV, pull=DEV),
    Case("trained", "org/trained", FVQ, "cli", "trained", "trained/model", push_kwargs=CLI_FLAGS),
    Case(
        "train-form", "org/trained", FVQ, None, None, "trained/model-train", pull={"subfolder": "model-train"}
    ),
    Case(
        "generator", "org/llamagen-gpt-tiny", GPT, "model", "gpt", "gpt", probe="hub_probes:probe_generator"
    ),
    Case(
        "pipeline",
        "org/llamagen-tiny",
        PIPE,
        "model",
        "llamagen",
        "llamagen",
        probe="hub_probes:probe_pipeline",
    ),
    Case(
        "pipeline-vqvae", "org/llamagen-tiny", FVQ, None, None, "llamagen/vqvae", pull={"subfolder": "vqvae"}
    ),
    Case(
        "pipeline-transformer",
        "org/llamagen-tiny",
        GPT,
        None,
        None,
        "llamagen/transformer",
        pull={"subfolder": "transformer"},
        probe="hub_probes:probe_generator",
    ),
]

CLIENT_SCRIPT = """
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from test_hub import load_object

torch.set_num_threads(1)  # tiny convs: one thread is many times faster than two oversubscribed ones

mode, root, out, cases = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
cache = {"cache_dir": sys.argv[5]} if len(sys.argv) > 5 else {}  # the pull's own, fresh cache

if mode == "online":  # push every case
    from fullvq_hf.cli import main as cli_main
    from fullvq_hf.hub import push_to_hub

    for case in cases:
        src, repo_id, kw = root / str(case["src"]), case["repo_id"], case["push_kwargs"]
        if case["push"] == "model":
            load_object(case["cls"]).from_pretrained(src).push_to_hub(repo_id, **kw)
        elif case["push"] == "hub":
            push_to_hub(src, repo_id, **kw)
        elif case["push"] == "hub-object":
            push_to_hub(load_object(case["cls"]).from_pretrained(src), repo_id, **kw)
        elif case["push"] == "cli":
            flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in kw.items()]
            cli_main(["push", str(src), repo_id, *flags])

for case in cases:  # pull every case (offline: from the cache only)
    model = load_object(case["cls"]).from_pretrained(case["repo_id"], **case["pull"], **cache)
    save_file(load_object(case["probe"])(model), str(out / f"{case['name']}.safetensors"))

if mode == "online":  # what landed on the Hub, and the errors a user sees
    from huggingface_hub import HfApi, hf_hub_download
    from fullvq_hf import FVQModel

    repos = {}
    for case in cases:
        rev = case["pull"].get("revision", "main")
        files = HfApi().list_repo_files(case["repo_id"], revision=rev)
        readme = Path(hf_hub_download(case["repo_id"], "README.md", revision=rev, **cache)).read_text()
        repos[f"{case['repo_id']}@{rev}"] = {"files": sorted(files), "readme": readme}
    results = json.loads(Path(hf_hub_download("org/trained", "results.json", **cache)).read_text())
    errors = {}
    for label, kw in [("repo", dict(pretrained_model_name_or_path="org/does-not-exist")),
                      ("file", dict(pretrained_model_name_or_path="org/fvq-tiny", subfolder="no-such-folder")),
                      ("revision", dict(pretrained_model_name_or_path="org/fvq-tiny", revision="no-such-branch"))]:
        try:
            FVQModel.from_pretrained(**kw, **cache)
            errors[label] = None
        except Exception as e:
            errors[label] = {"type": type(e).__name__, "message": str(e)}
    emit({"repos": repos, "results": results, "errors": errors})
"""


def write_sources(root: Path) -> None:
    """The local checkpoints the cases push: tiny tokenizers, a pipeline-like folder, two revisions, a training run."""
    from fullvq_hf import VQGANLCModel
    from fullvq_hf.training.config import make_config
    from fullvq_hf.training.tokenizer_trainer import train

    def tiny_lc(seed):
        model = VQGANLCModel.from_preset("tiny", codebook_size=64, codebook_dim=8, codebook_feature_dim=16)
        model.load_codebook(torch.randn(64, 16, generator=torch.Generator().manual_seed(seed)))
        return model

    torch.manual_seed(0)
    randomize_bridge(tiny_fvq(), seed=1).save_pretrained(root / "fvq")
    tiny_lc(2).save_pretrained(root / "lc")
    randomize_bridge(tiny_fvq(), seed=3).save_pretrained(root / "pipe" / "vqvae")
    tiny_lc(4).save_pretrained(root / "pipe" / "lc_vqvae")
    index = {"_class_name": "LlamaGenPipeline", "_diffusers_version": "0.42.1",
             "vqvae": ["fullvq_hf", "FVQModel"], "lc_vqvae": ["fullvq_hf", "VQGANLCModel"]}  # fmt: skip
    (root / "pipe" / "model_index.json").write_text(json.dumps(index))
    # the generator on its own, and a LlamaGen pipeline (generator + tokenizer) in one repo
    from fullvq_hf import LlamaGenConfig, LlamaGenForConditionalGeneration, LlamaGenPipeline

    gpt_config = LlamaGenConfig(vocab_size=256, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                num_classes=10, grid_size=4)  # fmt: skip
    gpt = LlamaGenForConditionalGeneration(gpt_config)
    torch.nn.init.normal_(
        gpt.output.weight, std=0.5
    )  # the head is zero-initialised: make the logits informative
    gpt.save_pretrained(root / "gpt")
    pipe = LlamaGenPipeline(transformer=gpt, vqvae=randomize_bridge(tiny_fvq(sample_size=8), seed=7))
    pipe.save_pretrained(root / "llamagen")
    randomize_bridge(tiny_fvq(), seed=5).save_pretrained(root / "rev-main")
    randomize_bridge(tiny_fvq(), seed=6).save_pretrained(root / "rev-dev")
    # 2 steps of the real trainer with a checkpoint (pickled optimizer state that must stay home), a sample grid,
    # and an evaluation with the shipped Fashion-MNIST feature extractor
    overrides = dict(
        max_steps=2,
        checkpoint_every=2,
        image_every=2,
        eval_max_images=16,
        feature_extractor="fashion-mnist-classifier",
    )
    train(make_config({"preset": "cpu-tiny", "output_dir": str(root / "trained"), **overrides}))


def push_and_pull(hub: HubServer, cases: list[Case], root: Path, tmp: Path) -> dict:
    """Push every case, pull every case into a fresh cache, then load every case again offline, by repo id, from
    that cache (HF_HOME), with the Hub out of reach.

    Returns the probes (reference / pulled / offline, per case), what the online client saw (files and cards
    per repo, errors), and the server's request log per client. Pushing and pulling share one interpreter (the
    pull uses ``cache_dir=<fresh HF_HOME>/hub``): an interpreter costs ~8 s of imports."""
    specs = json.dumps([case.__dict__ for case in cases])
    home = tmp / "home-pull"
    for name in ("pulled", "offline"):
        (tmp / name).mkdir()
    online = hub_client(CLIENT_SCRIPT, endpoint=hub.endpoint, hf_home=tmp / "home-push",
                        args=["online", str(root), str(tmp / "pulled"), specs, str(home / "hub")])  # fmt: skip
    log = {"online": list(hub.requests)}
    hub_client(
        CLIENT_SCRIPT,
        endpoint=None,
        hf_home=home,
        offline=True,
        args=["offline", str(root), str(tmp / "offline"), specs],
    )
    log["offline"] = hub.requests[len(log["online"]) :]
    probes = {}
    for case in cases:
        reference = load_object(case.probe)(load_object(case.cls).from_pretrained(root / case.ref))
        probes[case.name] = {
            "reference": reference,
            "pulled": load_file(tmp / "pulled" / f"{case.name}.safetensors"),
            "offline": load_file(tmp / "offline" / f"{case.name}.safetensors"),
        }
    return {"probes": probes, "online": online, "requests": log}


# ---------------------------------------------------------------------------------------------------- no package
# How a user without fullvq_hf loads each pushed case: "<library>:<class>[/<pipeline component>]".
NO_PACKAGE_LOADS = {
    "fvq": "diffusers:AutoModel",  # pushed with FVQModel.push_to_hub
    "vqgan-lc": "diffusers:AutoModel",
    "trained": "diffusers:AutoModel",  # pushed with `fullvq push`
    "train-form": "diffusers:AutoModel",
    "generator": "transformers:AutoModel",  # pushed with LlamaGenForConditionalGeneration.push_to_hub
    "pipeline": "diffusers:DiffusionPipeline",  # pushed with LlamaGenPipeline.push_to_hub
    "pipeline-transformer": "diffusers:DiffusionPipeline/transformer",
    "pipeline-vqvae": "diffusers:DiffusionPipeline/vqvae",
}

NO_PACKAGE_SCRIPT = """
import importlib, json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
import hub_probes

torch.set_num_threads(1)
try:
    import fullvq_hf
    found = fullvq_hf.__file__
except ModuleNotFoundError as e:
    found = None
out, cases = Path(sys.argv[1]), json.loads(sys.argv[2])
pipelines, classes = {}, {}
for case in cases:
    library, _, rest = case["load"].partition(":")
    cls_name, _, component = rest.partition("/")
    cls = getattr(importlib.import_module(library), cls_name)
    if cls_name == "DiffusionPipeline":
        key = case["repo_id"]
        if key not in pipelines:
            pipelines[key] = cls.from_pretrained(key, trust_remote_code=True)
        obj = pipelines[key]
        obj = getattr(obj, component) if component else obj
    else:
        obj = cls.from_pretrained(case["repo_id"], trust_remote_code=True, **case["pull"])
    classes[case["name"]] = [type(obj).__module__, type(obj).__name__]
    probe = getattr(hub_probes, case["probe"].split(":")[1])
    save_file(probe(obj), str(out / f"{case['name']}.safetensors"))
    if case["name"] == "fvq":  # push_to_hub of remote code without the package: the library's own push
        obj.push_to_hub("org/pushed-without-the-package")
emit({"fullvq_hf": found, "classes": classes})
"""


def venv_without_the_package(path: Path) -> Path:
    """A fresh virtualenv that sees this interpreter's site-packages (torch, diffusers, transformers) but not
    fullvq_hf: a ``.pth`` line puts the folder on sys.path without running its ``.pth`` files, so the editable
    install's finder (``__editable__.fullvq_hf-*.pth``) is never installed. Returns its python."""
    import sysconfig
    import venv

    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(path)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    shared = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "shared_site_packages.pth").write_text("\n".join(shared) + "\n")
    return python


def load_without_the_package(hub: HubServer, cases: list[Case], tmp: Path) -> dict:
    """Load every case of ``NO_PACKAGE_LOADS`` in a virtualenv without fullvq_hf, from the loopback Hub, with
    ``trust_remote_code=True``; return what it saw (``fullvq_hf``: its path if importable, ``classes``) and the
    probes."""
    python = venv_without_the_package(tmp / "venv-no-package")
    (tmp / "no-package").mkdir()
    specs = [
        {**case.__dict__, "load": NO_PACKAGE_LOADS[case.name]}
        for case in cases
        if case.name in NO_PACKAGE_LOADS
    ]
    seen = hub_client(NO_PACKAGE_SCRIPT, endpoint=hub.endpoint, hf_home=tmp / "home-no-package", python=python,
                      package=False, cwd=tmp, args=[str(tmp / "no-package"), json.dumps(specs)])  # fmt: skip
    seen["probes"] = {s["name"]: load_file(tmp / "no-package" / f"{s['name']}.safetensors") for s in specs}
    return seen


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    root = tmp / "sources"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the clients: tiny convs run far faster on one thread than on two
    try:
        write_sources(root)
        with HubServer() as hub:
            run = push_and_pull(hub, CASES, root, tmp)
            run["no_package"] = load_without_the_package(hub, CASES, tmp)
    finally:
        torch.set_num_threads(threads)
    run.update(hub=hub, root=root)
    return run


# ---------------------------------------------------------------------------------------------------- round trips
def assert_same_outputs(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_push_pull_round_trip_gives_the_same_outputs(hub_run, case):
    probes = hub_run["probes"][case.name]
    assert_same_outputs(probes["pulled"], probes["reference"])
    assert_same_outputs(probes["offline"], probes["reference"])


def test_no_package_virtualenv_cannot_import_fullvq_hf(hub_run):
    seen = hub_run["no_package"]
    assert seen["fullvq_hf"] is None  # ModuleNotFoundError there: every class below came from the repos' code
    for name, (module, _cls) in seen["classes"].items():
        assert module.startswith(("diffusers_modules.", "transformers_modules.")), (name, module)


def test_push_to_hub_of_remote_code_without_the_package_is_the_libraries_push(hub_run):
    files = hub_run["hub"].files("org/pushed-without-the-package", "main")
    assert {"config.json", "diffusion_pytorch_model.safetensors"} <= set(files)
    assert json.loads(files["config.json"])["_class_name"] == "FVQModel"


@pytest.mark.parametrize("name", list(NO_PACKAGE_LOADS))
def test_trust_remote_code_without_the_package_gives_the_same_outputs(hub_run, name):
    """AutoModel (diffusers / transformers) and DiffusionPipeline load every pushed kind from the loopback Hub in a
    virtualenv without fullvq_hf: the same token ids, logits and pixels as the package."""
    assert_same_outputs(hub_run["no_package"]["probes"][name], hub_run["probes"][name]["reference"])
    case = next(c for c in CASES if c.name == name)
    expected = case.cls.split(":")[1]
    assert hub_run["no_package"]["classes"][name][1] == expected


def test_offline_load_from_the_cache_makes_no_request(hub_run):
    assert hub_run["requests"]["offline"] == []
    online = hub_run["requests"]["online"]
    assert ("GET", "/api/models/org/trained") in online  # the online pull did go through the loopback Hub


def test_revision_push_leaves_main_unchanged(hub_run):
    hub, root = hub_run["hub"], hub_run["root"]
    weights = "diffusion_pytorch_model.safetensors"
    assert hub.files("org/branches", "main")[weights] == (root / "rev-main" / weights).read_bytes()
    assert hub.files("org/branches", "dev")[weights] == (root / "rev-dev" / weights).read_bytes()
    main, dev = hub_run["probes"]["revision-main"]["pulled"], hub_run["probes"]["revision-dev"]["pulled"]
    assert not torch.equal(main["pixels"], dev["pixels"])


def test_missing_repo_file_and_revision_give_clear_errors(hub_run):
    errors = hub_run["online"]["errors"]
    assert errors["repo"]["type"] == "OSError" and "org/does-not-exist" in errors["repo"]["message"]
    assert "not a valid model identifier" in errors["repo"]["message"]
    assert errors["file"]["type"] == "OSError"
    assert "org/fvq-tiny does not appear to have a file named config.json" in errors["file"]["message"]
    assert errors["revision"] is not None and "no-such-branch" in errors["revision"]["message"]


def test_pipeline_folder_is_one_repo_with_a_pipeline_card(hub_run):
    from huggingface_hub import ModelCard

    repo = hub_run["online"]["repos"]["org/pipeline-tiny@main"]
    assert {"model_index.json", "vqvae/config.json", "lc_vqvae/config.json", "README.md"} <= set(
        repo["files"]
    )
    card = ModelCard(repo["readme"])
    assert card.data.pipeline_tag == "unconditional-image-generation" and "llamagen" in card.data.tags
    assert "arXiv:2406.06525" in repo["readme"]


def test_fullvq_push_of_a_training_run(hub_run):
    from huggingface_hub import ModelCard

    root, online = hub_run["root"], hub_run["online"]
    repo = online["repos"]["org/trained@main"]
    assert set(repo["files"]) == {
        ".gitattributes", "README.md", "config.json", "diffusion_pytorch_model.safetensors", "model-train/config.json",
        "model-train/diffusion_pytorch_model.safetensors", "results.json", "training_config.json", "reconstructions.png",
        "fullvq_hf.py", "model-train/fullvq_hf.py",
    }  # fmt: skip
    assert (root / "trained" / "checkpoints").is_dir()  # pickled optimizer state was there and stayed home
    repo_state = hub_run["hub"].state.repos["org/trained"]
    assert repo_state.private and repo_state.log[-1][1:] == ("main", "2 steps of cpu-tiny")  # the CLI's flags
    local_results = json.loads((root / "trained" / "results.json").read_text())
    assert online["results"] == local_results
    # the card parses, carries the metadata, the measured usage, the recipe and the citations
    card = ModelCard(repo["readme"])
    assert card.data.library_name == "diffusers" and card.data.license == "apache-2.0"
    assert {"fullvq_hf", "fvq", "vector-quantization", "image-tokenizer"} <= set(card.data.tags)
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert f"{100 * local_results['usage']:.2f}%" in card.text
    assert f"{local_results['frechet_distance']:.3f} (features: fashion-mnist-classifier)" in card.text
    assert "inference form" in card.text and 'subfolder="model-train"' in card.text
    assert "| preset | `cpu-tiny` |" in card.text and "](reconstructions.png)" in card.text
    assert "--config training_config.json" in card.text  # which the push uploaded
    assert "arXiv:2509.10140" in card.text and "@article{sun2024llamagen" in card.text
    # one commit for the whole push (its README went through /api/validate-yaml first)
    assert ("POST", "/api/validate-yaml") in hub_run["requests"]["online"]
    trained_posts = [p for m, p in hub_run["requests"]["online"] if m == "POST" and "org/trained" in p]
    assert [p.rsplit("/", 2)[-2] for p in trained_posts] == ["preupload", "commit"]


def test_diffusers_push_to_hub_uploads_safetensors_and_a_card(hub_run):
    repo = hub_run["online"]["repos"]["org/fvq-tiny@main"]
    assert set(repo["files"]) == {
        ".gitattributes",
        "README.md",
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "fullvq_hf.py",  # the remote code
    }
    config = json.loads(hub_run["hub"].files("org/fvq-tiny", "main")["config.json"])
    assert config["auto_map"] == {"AutoModel": "fullvq_hf.FVQModel"}


# ---------------------------------------------------------------------------------------------------- cards
def _fvq_config():
    return {"_class_name": "FVQModel", **tiny_fvq().config}


CARD_CASES = {
    "fvq_tokenizer": (
        _fvq_config,
        {"usage": 0.75, "used_codes": 192, "psnr": 21.5},
        "75.00% (192 / 256 codes)",
        "diffusers",
    ),
    "vqgan_lc_tokenizer": (
        lambda: {
            "_class_name": "VQGANLCModel",
            "codebook_size": 100000,
            "codebook_dim": 8,
            "codebook_feature_dim": 768,
        },
        {"usage": 0.99, "ssim": 0.5},
        "99.00%",
        "diffusers",
    ),
    "llamagen_generator": (
        lambda: {
            "model_type": "llamagen",
            "vocab_size": 16384,
            "grid_size": [16, 16],
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_classes": 1000,
        },
        {"fid": 2.18, "inception_score": 263.3},
        "| grid_size | `[16, 16]` |",
        "transformers",
    ),
    "llamagen_pipeline": (
        lambda: {
            "_class_name": "LlamaGenPipeline",
            "transformer": ["fullvq_hf.models.modeling_llamagen", "LlamaGenForConditionalGeneration"],
            "vqvae": ["fullvq_hf", "FVQModel"],
        },
        {"fid": 2.5},
        "| `vqvae` | `fullvq_hf.FVQModel` |",
        "diffusers",
    ),
}
ARXIV = {"fvq_tokenizer": "2509.10140", "vqgan_lc_tokenizer": "2406.11837", "llamagen_generator": "2406.06525",
         "llamagen_pipeline": "2406.06525"}  # fmt: skip


@pytest.mark.parametrize("kind", list(CARD_CASES))
def test_model_card_of_each_kind_parses_with_metadata_results_and_citation(kind):
    from huggingface_hub import ModelCard

    make_config, results, expected_row, library = CARD_CASES[kind]
    training = {
        "preset": "fvq-16k",
        "dataset": "ILSVRC/imagenet-1k",
        "init_from": "org/base-model",
        "max_steps": 400000,
    }
    card = render_model_card(None, make_config(), results=results, config=training, repo_id="org/some-model")
    parsed = ModelCard(str(card))  # raises on malformed YAML metadata
    assert parsed.data.license == "apache-2.0" and parsed.data.library_name == library
    assert "fullvq_hf" in parsed.data.tags and parsed.data.pipeline_tag
    assert parsed.data.base_model == "org/base-model" and parsed.data.datasets == ["ILSVRC/imagenet-1k"]
    assert expected_row in parsed.text and "| steps | `400000` |" in parsed.text
    if "fid" in results:
        assert f"| FID | {results['fid']} |" in parsed.text
    assert f"arXiv:{ARXIV[kind]}" in parsed.text and "```bibtex\n@" in parsed.text
    assert 'from_pretrained("org/some-model")' in parsed.text
    assert "{{" not in parsed.text and "{%" not in parsed.text


def test_card_without_results_or_recipe_says_so():
    card = render_model_card("vqgan_lc_tokenizer", {"codebook_size": 64, "codebook_dim": 8})
    assert "No evaluation results" in card.text and "No training configuration" in card.text
    assert "@inproceedings{zhu2024vqganlc" in card.text


def test_simvq_card_cites_simvq():
    card = render_model_card(None, {**_fvq_config(), "quantizer_type": "simvq"})
    assert "simvq" in card.data.tags and "arXiv:2411.02038" in card.text


def test_detect_kind_from_folders(tmp_path):
    tiny_fvq().save_pretrained(tmp_path / "fvq")
    assert detect_kind(tmp_path / "fvq") == "fvq_tokenizer"
    (tmp_path / "run").mkdir()
    tiny_fvq().save_pretrained(tmp_path / "run" / "model")
    assert detect_kind(tmp_path / "run") == "fvq_tokenizer"  # a trainer's output directory
    for name, content, kind in [
        ("gen", {"model_type": "llamagen"}, "llamagen_generator"),
        ("lc", {"_class_name": "VQGANLCModel"}, "vqgan_lc_tokenizer"),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(content))
        assert detect_kind(tmp_path / name) == kind
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "LlamaGenPipeline"}))
    assert detect_kind(tmp_path / "pipe") == "llamagen_pipeline"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="Cannot tell which kind"):
        detect_kind(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        detect_kind(tmp_path / "nothing-here")


def test_push_refuses_pickled_weights_before_contacting_the_hub(tmp_path):
    tiny_fvq().save_pretrained(tmp_path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(
        ValueError, match=r"Refusing to push pickled weights \['diffusion_pytorch_model.bin'\]"
    ):
        push_to_hub(tmp_path, "org/x")
    (tmp_path / "diffusion_pytorch_model.bin").unlink()
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match="No .safetensors weights"):
        push_to_hub(tmp_path, "org/x")


# ---------------------------------------------------------------------------------------------------- push_to_hub
METHOD_PUSHES = [c for c in CASES if c.push == "model"]


@pytest.mark.parametrize("case", METHOD_PUSHES, ids=[c.name for c in METHOD_PUSHES])
def test_model_push_to_hub_writes_the_package_card(hub_run, case):
    """``push_to_hub`` of FVQModel, VQGANLCModel, the generator and the pipeline (diffusers' / transformers' method
    names) uploads the card ``fullvq push`` renders, not the libraries' blank template."""
    from huggingface_hub import ModelCard

    readme = hub_run["online"]["repos"][f"{case.repo_id}@main"]["readme"]
    expected = render_model_card(
        None, hub_run["root"] / case.src, results=case.push_kwargs.get("results"), repo_id=case.repo_id
    )
    assert readme == str(expected)
    card = ModelCard(readme)
    assert (
        "fullvq_hf" in card.data.tags and "arXiv:2406.06525" in card.text
    )  # LlamaGen is cited by every kind
    assert (
        "This is the model card of a 🧨 diffusers model" not in readme
        and "Model Card for Model ID" not in readme
    )


def test_card_results_are_model_index_metadata_on_the_hub(hub_run):
    from huggingface_hub import ModelCard

    card = ModelCard(hub_run["online"]["repos"]["org/vqgan-lc-tiny@main"]["readme"])
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"usage": 0.5, "psnr": 20.25}  # num_images is not a metric
    assert {r.task_type for r in card.data.eval_results} == {"image-feature-extraction"}
    assert card.data.model_name == "vqgan-lc-tiny"
    trained = ModelCard(hub_run["online"]["repos"]["org/trained@main"]["readme"])
    local = json.loads((hub_run["root"] / "trained" / "results.json").read_text())
    by_metric = {r.metric_type: r for r in trained.data.eval_results}
    assert by_metric["psnr"].metric_value == pytest.approx(local["psnr"])
    assert by_metric["frechet_distance"].metric_args == {"feature_extractor": "fashion-mnist-classifier"}
    assert {r.dataset_type for r in trained.data.eval_results} == {"zalando-datasets/fashion_mnist"}
    assert {r.dataset_split for r in trained.data.eval_results} == {"test"}


def test_pushed_training_config_holds_no_local_path(hub_run):
    root = hub_run["root"]
    local = json.loads((root / "trained" / "training_config.json").read_text())
    assert str(root) in json.dumps(local)  # the trainer recorded its output folder
    pushed = hub_run["hub"].files("org/trained", "main")["training_config.json"].decode()
    assert str(root) not in pushed and str(Path.home()) not in pushed and "/tmp" not in pushed
    pushed = json.loads(pushed)
    assert pushed["output_dir"] is None and pushed["preset"] == "cpu-tiny" and pushed["max_steps"] == 2
    assert {k for k in local if pushed[k] != local[k]} == {"output_dir"}


# ---------------------------------------------------------------------------------------------------- what travels
def test_push_collects_only_weights_configs_results_and_the_latest_grid(tmp_path):
    from fullvq_hf.hub import _collect_files

    run = tmp_path / "run"
    tiny_fvq().save_pretrained(run / "model")
    tiny_fvq().save_pretrained(run / "model-train")
    stray = ["model/notes.txt", "model/extra/settings.json", "model/debug.png", "secrets.json", "samples/x.txt",
             "logs/events.out.tfevents.1", "checkpoints/checkpoint-2/optimizer.bin", "model-train/run.log"]  # fmt: skip
    for name in [*stray, "samples/step-00000002.png", "samples/step-00000004.png"]:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"x")
    (run / "results.json").write_text(
        json.dumps({"usage": 0.5, "feature_extractor": str(tmp_path / "fx.safetensors")})
    )
    (run / "training_config.json").write_text(json.dumps({
        "output_dir": str(run), "data_dir": "/data/imagenet", "dataset": "imagefolder", "init_from": "org/base",
        "tokenizer": str(tmp_path / "tok"), "codes": "./codes", "preset": "cpu-tiny", "eval_split": "test",
        "lc_codebook": "~/codebook.safetensors", "perceptual_weights": "org/vgg/vgg.safetensors",
    }))  # fmt: skip
    files, sample = _collect_files(run, "fvq_tokenizer")
    assert set(files) == {
        "config.json", "diffusion_pytorch_model.safetensors", "model-train/config.json",
        "model-train/diffusion_pytorch_model.safetensors", "results.json", "training_config.json",
        "reconstructions.png",
    }  # fmt: skip
    assert sample == "reconstructions.png" and files[sample] == run / "samples" / "step-00000004.png"
    config = json.loads(files["training_config.json"])
    assert config == {
        "output_dir": None, "data_dir": None, "dataset": "imagefolder", "init_from": "org/base", "tokenizer": None,
        "codes": None, "preset": "cpu-tiny", "eval_split": "test", "lc_codebook": None,
        "perceptual_weights": "org/vgg/vgg.safetensors",  # a file in a Hub repo
    }  # fmt: skip
    assert json.loads(files["results.json"]) == {"usage": 0.5, "feature_extractor": None}
    # a generator run's grid is a sample grid
    assert _collect_files(run, "llamagen_generator")[1] == "samples.png"


def test_push_of_a_model_folder_leaves_stray_files_home(tmp_path, caplog):
    from fullvq_hf.hub import _collect_files

    tiny_fvq().save_pretrained(tmp_path)
    for name in ["notes.txt", "debug.png", "sub/settings.json", "README.md"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    with caplog.at_level("WARNING", logger="fullvq_hf.hub"):
        files, sample = _collect_files(tmp_path, "fvq_tokenizer")
    assert set(files) == {"config.json", "diffusion_pytorch_model.safetensors"} and sample is None
    assert "debug.png" in caplog.text and "sub/settings.json" in caplog.text


def test_push_collects_variant_and_sharded_weights_with_their_index(tmp_path):
    from fullvq_hf.hub import _collect_files

    model = tiny_fvq()
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path, variant="fp16", max_shard_size="100KB")
    on_disk = {p.name for p in tmp_path.iterdir()}
    assert "diffusion_pytorch_model.safetensors.index.fp16.json" in on_disk and len(on_disk) > 4
    files, _ = _collect_files(tmp_path, "fvq_tokenizer")
    assert set(files) == on_disk
