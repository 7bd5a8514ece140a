"""The one-file remote code a push carries (fullvq_hf.remote_code): it defines the same models as the package, its
package-internal imports are flattened, and what it cannot flatten is a clear error at push time. The end-to-end
proof (a virtualenv without fullvq_hf loading pushed repos from the loopback Hub) is in test_hub.py."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap

import pytest
import torch
from helpers import randomize_bridge, tiny_fvq
from hub_probes import probe_generator, probe_tokenizer

from fullvq_hf import LlamaGenConfig, LlamaGenForConditionalGeneration, LlamaGenPipeline
from fullvq_hf import remote_code as rc


def exec_bundle(code: str, path, name: str):
    """Import ``code`` as module ``name`` from ``path`` (as diffusers / transformers import remote code)."""
    path.write_text(code)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def assert_same(a, b):
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def test_bundled_tokenizer_and_generator_match_the_package(tmp_path):
    from fullvq_hf import FVQModel

    model = randomize_bridge(tiny_fvq(), seed=1)
    model.save_pretrained(tmp_path / "fvq")
    bundle = exec_bundle(rc.bundle_source([FVQModel]), tmp_path / "fvq_bundle.py", "fvq_bundle_under_test")
    loaded = bundle.FVQModel.from_pretrained(tmp_path / "fvq")
    assert type(loaded).__module__ == "fvq_bundle_under_test"
    assert_same(probe_tokenizer(loaded), probe_tokenizer(FVQModel.from_pretrained(tmp_path / "fvq")))

    config = LlamaGenConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_classes=4, grid_size=2)  # fmt: skip
    gpt = LlamaGenForConditionalGeneration(config)
    torch.nn.init.normal_(gpt.output.weight, std=0.5)
    gpt.save_pretrained(tmp_path / "gpt")
    code = rc.bundle_source([LlamaGenForConditionalGeneration, LlamaGenConfig])
    bundle = exec_bundle(code, tmp_path / "gpt_bundle.py", "gpt_bundle_under_test")
    loaded = bundle.LlamaGenForConditionalGeneration.from_pretrained(tmp_path / "gpt")
    assert_same(
        probe_generator(loaded),
        probe_generator(LlamaGenForConditionalGeneration.from_pretrained(tmp_path / "gpt")),
    )


def test_executions_of_one_bundle_share_their_classes(tmp_path):
    """diffusers executes a pipeline's copies of the file as different modules (and re-executes them): the
    pipeline's isinstance checks must still see one class."""
    code = rc.bundle_source([LlamaGenPipeline])
    first = exec_bundle(code, tmp_path / "a.py", "bundle_copy_a")
    second = exec_bundle(code, tmp_path / "b.py", "bundle_copy_b")
    assert second.LlamaGenForConditionalGeneration is first.LlamaGenForConditionalGeneration
    assert second.LlamaGenPipeline is first.LlamaGenPipeline


def test_out_of_bundle_imports_fail_clearly_without_the_package(fake_package, tmp_path):
    # a lazy import of a module outside the bundle (as models/hub_mixin.py's lazy import of hub.py) is kept
    # absolute and guarded: without the package it is an ImportError naming the install, not a NameError
    fake_package({
        "__init__.py": "",
        "a.py": "from __future__ import annotations\nclass Model:\n    def export(self):\n"
                "        from .extra import helper\n        return helper()\n",
        "extra.py": "def helper():\n    return 1\n",
    })  # fmt: skip
    import fakepkg.a  # noqa: F401  (the bundler reads loaded modules)

    assert rc.module_closure(["fakepkg.a"]) == ["fakepkg.a"]
    text = rc._rewrite_module("fakepkg.a", {"fakepkg.a"})
    assert "from fakepkg.extra import helper" in text
    namespace: dict = {}
    exec(compile("from __future__ import annotations\n" + text, "bundle", "exec"), namespace)
    assert namespace["Model"]().export() == 1  # with the package installed, the import goes through
    sys.modules["fakepkg.extra"] = None  # as if the package were not installed (the fixture cleans it up)
    with pytest.raises(ImportError, match="pip install"):
        namespace["Model"]().export()


def _fake_package(root, files: dict[str, str]):
    for name, text in files.items():
        (root / "fakepkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "fakepkg" / name).write_text(textwrap.dedent(text))


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(rc, "PACKAGE", "fakepkg")
    yield lambda files: _fake_package(tmp_path, files)
    for name in [m for m in sys.modules if m == "fakepkg" or m.startswith("fakepkg.")]:
        del sys.modules[name]


def test_bundler_flattens_aliases_and_package_reexports(fake_package):
    fake_package({
        "__init__.py": "from .a import Base\n",
        "a.py": "from __future__ import annotations\nclass Base:\n    x = 1\n",
        "b.py": """\
            from __future__ import annotations
            from . import Base as Parent
            from .a import Base

            try:
                from .a import Base as Fallback
            except ImportError:
                Fallback = None

            class Child(Parent):
                def lazy(self):
                    from .a import Base as B
                    return B
            """,
    })  # fmt: skip
    import fakepkg.b

    assert rc.module_closure(["fakepkg.b"]) == ["fakepkg.a", "fakepkg.b"]
    text = "".join(rc._rewrite_module(m, {"fakepkg.a", "fakepkg.b"}) for m in ["fakepkg.a", "fakepkg.b"])
    namespace: dict = {}
    exec(compile("from __future__ import annotations\n" + text, "bundle", "exec"), namespace)
    assert namespace["Child"]().lazy() is namespace["Base"] and issubclass(
        namespace["Child"], namespace["Base"]
    )
    assert namespace["Fallback"] is namespace["Base"] and fakepkg.b.Child.x == 1


def test_bundler_refuses_two_modules_defining_one_name(fake_package):
    fake_package({
        "__init__.py": "",
        "a.py": "from __future__ import annotations\ndef helper():\n    return 1\n",
        "b.py": "from __future__ import annotations\nfrom .a import helper as h\ndef helper():\n    return 2\n",
    })  # fmt: skip
    with pytest.raises(rc.BundleError, match=r"fakepkg.a and fakepkg.b both define 'helper'"):
        rc._check_collisions(rc.module_closure(["fakepkg.b"]))


def test_remote_code_files_of_a_pipeline_folder(tmp_path):
    config = LlamaGenConfig(vocab_size=256, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_classes=4, grid_size=4)  # fmt: skip
    pipe = LlamaGenPipeline(
        transformer=LlamaGenForConditionalGeneration(config), vqvae=tiny_fvq(sample_size=8)
    )
    pipe.save_pretrained(tmp_path)
    files = {p.relative_to(tmp_path).as_posix(): p for p in tmp_path.rglob("*.json")}
    out = rc.remote_code_files(files)
    index = json.loads(out["model_index.json"])
    assert index["_class_name"] == ["fullvq_hf.pipelines.pipeline_llamagen", "LlamaGenPipeline"]
    assert index["vqvae"] == ["fullvq_hf.models.modeling_fvq", "FVQModel"]
    assert set(out) == {
        "model_index.json",
        "fullvq_hf.pipelines.pipeline_llamagen.py",
        "transformer/fullvq_hf.models.modeling_llamagen.py",
        "vqvae/fullvq_hf.models.modeling_fvq.py",
    }
    assert len({out[k] for k in out if k.endswith(".py")}) == 1  # one bundle, three copies
    # pushing a folder that was pushed before (its model_index.json already rewritten) gives the same repo
    again = rc.remote_code_files({**files, "model_index.json": out["model_index.json"]})
    assert again == out


def test_the_package_loads_a_pipeline_folder_that_holds_remote_code(tmp_path):
    """A Hub snapshot after a ``trust_remote_code=True`` load holds the .py files; ``LlamaGenPipeline.from_pretrained``
    of the same snapshot must still load the package's classes (diffusers alone asks to trust the code)."""
    config = LlamaGenConfig(vocab_size=256, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_classes=4, grid_size=4)  # fmt: skip
    pipe = LlamaGenPipeline(
        transformer=LlamaGenForConditionalGeneration(config), vqvae=tiny_fvq(sample_size=8)
    )
    pipe.save_pretrained(tmp_path)
    files = {p.relative_to(tmp_path).as_posix(): p for p in tmp_path.rglob("*.json")}
    for path, content in rc.remote_code_files(files).items():
        (tmp_path / path).write_bytes(content)
    loaded = LlamaGenPipeline.from_pretrained(tmp_path)
    assert type(loaded) is LlamaGenPipeline and type(loaded.transformer) is LlamaGenForConditionalGeneration
    assert loaded.name_or_path == str(tmp_path)
    for name in ("transformer", "vqvae"):
        expected, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected), name
