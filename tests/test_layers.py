"""The package's floors: a cheap ``import fullvq_hf``, ``fullvq --help`` without torch, models/ importing no code of
the floors above it, metrics knowing no named network. (What is imported is checked, not how long it takes.)"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fullvq_hf"
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "datasets")
UPPER_FLOORS = ("training", "hub", "convert", "evaluation", "data", "pipelines", "cli", "metrics")


def _loaded_modules(code: str) -> set[str]:
    """The top-level packages and fullvq_hf modules in sys.modules after running ``code`` in a fresh Python."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_import_fullvq_hf_imports_no_framework_and_no_upper_floor():
    loaded = _loaded_modules("import fullvq_hf\nassert fullvq_hf.__version__")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    # runtime.py (stdlib only) sets the CPU threading/malloc policy, which must happen before torch loads
    assert not {m for m in loaded if m.startswith("fullvq_hf.")} - {"fullvq_hf.runtime"}, (
        "import fullvq_hf must import no submodule but runtime"
    )


def test_fullvq_help_imports_no_torch():
    loaded = _loaded_modules(
        "import contextlib, io\nfrom fullvq_hf.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n    main(['--help'])\n"
        "assert 'train-tokenizer' in out.getvalue()"
    )
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_lazy_names_resolve_and_match_all():
    import fullvq_hf

    assert sorted(fullvq_hf.__all__) == sorted(fullvq_hf._LAZY_NAMES)
    for name in fullvq_hf.__all__:
        assert getattr(fullvq_hf, name) is not None, name
    from fullvq_hf.models import FVQModel

    assert fullvq_hf.FVQModel is FVQModel
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        fullvq_hf.Nope  # noqa: B018


def _imports(path: Path) -> list[str]:
    """The fullvq_hf modules ``path`` imports (absolute names), at any depth of the file (lazy imports too)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # e.g. ("fullvq_hf", "models")
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "from ..x import y" / "from . import y"
                base = ".".join(package[: len(package) - node.level + 1])
                if node.module:
                    names.append(f"{base}.{node.module}")
                else:
                    names += [f"{base}.{alias.name}" for alias in node.names]
            elif node.module and node.module.startswith("fullvq_hf"):
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("fullvq_hf")]
    return names


# The one sanctioned exception, lazy inside a method: ``model.push_to_hub`` (the method diffusers and transformers
# users call on a model) must write the package's card, and neither library offers a card hook to register from hub.py.
ALLOWED_UPWARD = {("hub_mixin.py", "fullvq_hf.hub")}


def test_models_import_no_code_of_the_floors_above():
    bad = {}
    for path in sorted((PACKAGE / "models").glob("*.py")):
        upper = [
            m
            for m in _imports(path)
            if m.split(".")[1:2] and m.split(".")[1] in UPPER_FLOORS and (path.name, m) not in ALLOWED_UPWARD
        ]
        if upper:
            bad[path.name] = upper
    assert not bad, f"models/ must hold nn.Modules and their serialisation only; these import upper floors: {bad}"


def test_metrics_know_no_named_network():
    imported = _imports(PACKAGE / "metrics.py")
    assert not [m for m in imported if m.startswith(("fullvq_hf.evaluation", "fullvq_hf.training", "fullvq_hf.data"))]
    text = (PACKAGE / "metrics.py").read_text()
    assert "fmnist" not in text and "load_classifier" not in text


def test_codebook_builder_lives_in_data_preparation():
    from fullvq_hf.data import lc_codebook
    from fullvq_hf.models import modeling_vqgan_lc

    assert not (PACKAGE / "models" / "lc_codebook.py").exists()
    assert lc_codebook.save_codebook is modeling_vqgan_lc.save_codebook  # the file format stays with the model
    assert callable(lc_codebook.kmeans) and callable(lc_codebook.build_codebook)
