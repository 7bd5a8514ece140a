"""Remote code: the package's model code in ONE file, so a pushed checkpoint loads without ``pip install fullvq_hf``.

    from transformers import AutoModel                       # the generator
    gpt = AutoModel.from_pretrained("org/llamagen-gpt", trust_remote_code=True)
    from diffusers import AutoModel, DiffusionPipeline        # a tokenizer, a pipeline
    vq = AutoModel.from_pretrained("org/fvq-tokenizer", trust_remote_code=True)
    pipe = DiffusionPipeline.from_pretrained("org/llamagen-pipeline", trust_remote_code=True)

``fullvq_hf.hub.push_to_hub`` (and so ``model.push_to_hub`` and ``fullvq push``) adds what those calls read:

- a tokenizer or generator repo: ``fullvq_hf.py`` next to ``config.json``, and ``auto_map`` in ``config.json``
  (``{"AutoModel": "fullvq_hf.FVQModel"}``; the generator also ``"AutoConfig": "fullvq_hf.LlamaGenConfig"``), as
  transformers' and diffusers' ``register_for_auto_class`` would write;
- a pipeline repo: ``model_index.json`` names the pipeline ``[module, "LlamaGenPipeline"]``; one bundle of the
  pipeline and its components' classes sits at the root as ``<module>.py`` (diffusers' custom pipeline) and in
  every component folder as ``<library>.py`` (diffusers' custom components), ``<library>`` being the module
  ``save_pretrained`` recorded for the component (``fullvq_hf.models.modeling_fvq``). With the package imported,
  diffusers resolves those names in ``sys.modules`` and ``LlamaGenPipeline.from_pretrained`` downloads no code.

The file is assembled at push time (``bundle_source``) from the installed package's own modules: the
modules defining the classes and every module they import from the package, in dependency order, with the
package-internal imports removed (everything is one namespace). Imports the classes make lazily inside functions
from modules outside the bundle (e.g. converters) become absolute ``fullvq_hf`` imports that raise a clear
ImportError when the package is missing. Why one file: diffusers downloads only ``<component>/<library>.py`` for a
custom component (none of its imports), and transformers' ``trust_remote_code`` follows only flat relative
imports; a single file satisfies both, and a reader can review the code they are asked to trust in one place.

Pure source transformation (``ast`` + line edits, comments kept): it never imports the code it bundles except to
find where a name re-exported by a package ``__init__`` is defined.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PACKAGE = "fullvq_hf"
# the module (file) name of the bundle in a model repo, as named by auto_map ("fullvq_hf.FVQModel")
BUNDLE_NAME = "fullvq_hf"
BUNDLE_FILE = f"{BUNDLE_NAME}.py"

# Every execution of one bundle in a process must give the SAME class objects: diffusers executes a pipeline's
# copies (root, each component folder) as different modules, and re-executes a module for every component it
# loads, so the pipeline would otherwise meet a transformer of another execution's class (isinstance fails). The
# first execution's definitions are kept in a registry module keyed by the bundle's content hash.
_REGISTRY = "_fullvq_hf_remote_code"
_SHARE_DEFINITIONS = f"""

# ---- one set of classes per process for this code (see the header) ----
import sys as _sys
import types as _types

_registry = _sys.modules.setdefault({_REGISTRY!r}, _types.ModuleType({_REGISTRY!r})).__dict__
if _FULLVQ_BUNDLE_ID in _registry:
    globals().update(_registry[_FULLVQ_BUNDLE_ID])
else:
    _registry[_FULLVQ_BUNDLE_ID] = {{k: v for k, v in globals().items() if not k.startswith("__")}}
"""

_HEADER = '''"""{package} {version}: {classes}, in one file.

Assembled by fullvq_hf.remote_code so that this repository loads with ``trust_remote_code=True`` and without
``pip install fullvq_hf``, from the package modules
    {modules}.
With the package installed, prefer ``from fullvq_hf import ...`` (no remote code is run). The code is the
package's, unchanged but for its package-internal imports and the class sharing at the end.
"""

from __future__ import annotations

# sha256 of this file's code: executions of the same code share their classes (see the end of the file)
_FULLVQ_BUNDLE_ID = "{bundle_id}"
'''


class BundleError(RuntimeError):
    """The package's code cannot be assembled into one file (a package-internal import the bundler cannot flatten,
    or two modules defining the same top-level name)."""


# ---------------------------------------------------------------------------------------------------- modules
def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise BundleError(f"Cannot find the source of {module}.")
    return Path(spec.origin).read_text(encoding="utf-8")


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def _target(node: ast.ImportFrom, module: str) -> str | None:
    """The absolute module an ``ImportFrom`` in ``module`` reads from, if it is inside the package; else None."""
    if node.level:
        package = module if _is_package(module) else module.rpartition(".")[0]
        name = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
    else:
        name = node.module or ""
    return name if name == PACKAGE or name.startswith(PACKAGE + ".") else None


def _defining_module(package: str, name: str) -> str:
    """The package module that defines ``name`` re-exported by ``package`` (a package ``__init__``)."""
    obj = getattr(importlib.import_module(package), name)
    candidates = [getattr(obj, "__module__", None)] + sorted(
        m for m in sys.modules if m.startswith(package + ".")
    )
    for candidate in candidates:
        if candidate and candidate.startswith(PACKAGE) and not _is_package(candidate):
            if (
                name in _top_level_definitions(ast.parse(_source(candidate)))
                and getattr(sys.modules.get(candidate) or importlib.import_module(candidate), name, None)
                is obj
            ):
                return candidate
    raise BundleError(
        f"Cannot tell which module of {package} defines {name!r}; import it from its own module."
    )


def _resolve(node: ast.ImportFrom, module: str) -> list[tuple[str, str, str]]:
    """(defining module, name, bound name) for each name a package-internal ``ImportFrom`` binds."""
    target = _target(node, module)
    assert target is not None
    out = []
    for alias in node.names:
        if alias.name == "*":
            raise BundleError(f"{module}: `from {target} import *` cannot be bundled; import the names.")
        if _is_package(target):
            if importlib.util.find_spec(f"{target}.{alias.name}") is not None and _is_module_name(
                target, alias.name
            ):
                raise BundleError(
                    f"{module}: `from {target} import {alias.name}` imports a module; import the names it defines."
                )
            out.append((_defining_module(target, alias.name), alias.name, alias.asname or alias.name))
        else:
            out.append((target, alias.name, alias.asname or alias.name))
    return out


def _is_module_name(package: str, name: str) -> bool:
    return not hasattr(importlib.import_module(package), name) or inspect.ismodule(
        getattr(importlib.import_module(package), name)
    )


def _top_level_definitions(tree: ast.Module) -> dict[str, tuple[ast.stmt, str]]:
    """Name -> (statement, what it binds) for what a module defines at top level (functions, classes, assignments,
    imports), including inside top-level ``if`` / ``try`` blocks. Two imports of one object bind the same."""
    out: dict[str, tuple[ast.stmt, str]] = {}

    def visit(statements: Iterable[ast.stmt]):
        for stmt in statements:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                out[stmt.name] = (stmt, ast.dump(stmt))
            elif isinstance(stmt, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            out[node.id] = (stmt, ast.dump(stmt))
            elif isinstance(stmt, ast.Import | ast.ImportFrom):
                source = stmt.module if isinstance(stmt, ast.ImportFrom) else None
                level = stmt.level if isinstance(stmt, ast.ImportFrom) else 0
                for alias in stmt.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    what = alias.name if alias.asname or source else alias.name.split(".")[0]
                    out[bound] = (stmt, f"import {'.' * level}{source or ''}:{what}")
            elif isinstance(stmt, ast.If | ast.Try):
                visit(stmt.body)
                visit(getattr(stmt, "orelse", []))
                for handler in getattr(stmt, "handlers", []):
                    visit(handler.body)
                visit(getattr(stmt, "finalbody", []))

    visit(tree.body)
    return out


def _walk_top_level(tree: ast.Module) -> Iterable[ast.stmt]:
    """Top-level statements, descending into top-level ``if`` / ``try`` blocks (not into functions or classes)."""
    for stmt in tree.body:
        yield stmt
        if isinstance(stmt, ast.If | ast.Try):
            inner = ast.Module(
                body=[*stmt.body, *stmt.orelse, *[s for h in getattr(stmt, "handlers", []) for s in h.body],
                      *getattr(stmt, "finalbody", [])],
                type_ignores=[],
            )  # fmt: skip
            yield from _walk_top_level(inner)


def module_closure(modules: Iterable[str]) -> list[str]:
    """The package modules that ``modules`` import at top level, recursively, dependencies first."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(module: str):
        if module in order:
            return
        if module in visiting:
            raise BundleError(f"Circular package-internal imports through {module} cannot be bundled.")
        visiting.add(module)
        tree = ast.parse(_source(module))
        for stmt in _walk_top_level(tree):
            if isinstance(stmt, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in stmt.names):
                raise BundleError(
                    f"{module}: `import {PACKAGE}...` cannot be bundled; use `from ... import name`."
                )
            if isinstance(stmt, ast.ImportFrom) and _target(stmt, module):
                for dependency, _, _ in _resolve(stmt, module):
                    visit(dependency)
        visiting.discard(module)
        order.append(module)

    for module in modules:
        visit(module)
    return order


# ---------------------------------------------------------------------------------------------------- rewriting
def _statement_lines(lines: list[str], stmt: ast.stmt, module: str) -> tuple[int, int, str]:
    start, end = stmt.lineno - 1, stmt.end_lineno
    indent = lines[start][: stmt.col_offset]
    if indent.strip():
        raise BundleError(f"{module}:{stmt.lineno}: put the package-internal import on its own line.")
    return start, end, indent


def _rewrite_module(module: str, bundled: set[str]) -> str:
    """``module``'s source for the bundle: docstring, ``__future__`` and ``__all__`` removed, package-internal
    imports of bundled modules replaced by aliases (or nothing), other package-internal imports made absolute and
    guarded."""
    source = _source(module)
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []
    module_level = set(map(id, tree.body))

    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            edits.append((body[0].lineno - 1, body[0].end_lineno, ""))
    for stmt in body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            edits.append((stmt.lineno - 1, stmt.end_lineno, ""))
        elif isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets
        ):
            edits.append((stmt.lineno - 1, stmt.end_lineno, ""))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not _target(node, module):
            continue
        start, end, indent = _statement_lines(lines, node, module)
        resolved = _resolve(node, module)
        if all(dep in bundled for dep, _, _ in resolved):
            aliases = [f"{indent}{bound} = {name}\n" for _, name, bound in resolved if bound != name]
            keep_block = id(node) not in module_level  # a function / if / try body must stay non-empty
            edits.append((start, end, "".join(aliases) or (f"{indent}pass\n" if keep_block else "")))
        else:  # e.g. a converter imported lazily by one method: works where the package is installed
            names = ", ".join(f"{n} as {b}" if b != n else n for _, n, b in resolved)
            groups: dict[str, list[str]] = {}
            for dep, n, b in resolved:
                groups.setdefault(dep, []).append(f"{n} as {b}" if b != n else n)
            imports = "".join(
                f"{indent}    from {dep} import {', '.join(ns)}\n" for dep, ns in groups.items()
            )
            message = (
                f"{names} come from the {PACKAGE} package, which this file (loaded as remote code) does not "
                f"include: pip install {PACKAGE}"
            )
            edits.append((start, end, (
                f"{indent}try:\n{imports}{indent}except ImportError as _error:\n"
                f"{indent}    raise ImportError({message!r}) from _error\n"
            )))  # fmt: skip
    for start, end, text in sorted(edits, reverse=True):
        lines[start:end] = [text] if text else []
    return "".join(lines).strip("\n") + "\n"


def _check_collisions(modules: list[str]) -> None:
    seen: dict[str, tuple[str, str]] = {}
    for module in modules:
        tree = ast.parse(_source(module))
        for name, (stmt, dump) in _top_level_definitions(tree).items():
            if name == "__all__" or (isinstance(stmt, ast.ImportFrom) and _target(stmt, module)):
                continue
            if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                continue
            if name in seen and seen[name][1] != dump:
                raise BundleError(
                    f"{seen[name][0]} and {module} both define {name!r} differently; the one-file bundle of the "
                    "remote code needs distinct top-level names: rename one."
                )
            seen.setdefault(name, (module, dump))


def bundle_source(classes: Iterable[type]) -> str:
    """One self-contained Python file defining ``classes`` (this package's) and all they use from the package."""
    classes = list(classes)
    roots = []
    for cls in classes:
        if not cls.__module__.startswith(PACKAGE + "."):
            raise BundleError(
                f"{cls.__qualname__} is not a {PACKAGE} class; only the package's code is bundled."
            )
        roots.append(cls.__module__)
    modules = module_closure(roots)
    for module in modules:
        if "from __future__ import annotations" not in _source(module):
            raise BundleError(
                f"{module} lacks `from __future__ import annotations`, which the bundle applies to all."
            )
    _check_collisions(modules)
    from . import __version__

    bundled = set(modules)
    code = "".join(f"\n\n# {'-' * 40} {module}\n" + _rewrite_module(module, bundled) for module in modules)
    header = _HEADER.format(
        package=PACKAGE, version=__version__, classes=", ".join(c.__name__ for c in classes),
        modules=textwrap.fill(", ".join(modules), 110, subsequent_indent="    "),
        bundle_id=hashlib.sha256(code.encode()).hexdigest(),
    )  # fmt: skip
    text = header + code + _SHARE_DEFINITIONS
    compile(text, BUNDLE_FILE, "exec")  # a syntax error here is a bundler bug: fail at push, not at load
    return text


# ---------------------------------------------------------------------------------------------------- repos
def _package_class(name: str) -> type | None:
    package = importlib.import_module(PACKAGE)
    obj = getattr(package, name, None)
    return obj if inspect.isclass(obj) else None


def _config_classes(config: Mapping[str, Any]) -> tuple[list[type], dict[str, str]]:
    """Classes to bundle and the ``auto_map`` for a model ``config.json`` of this package (empty if not ours)."""
    if config.get("model_type") == "llamagen" and "_class_name" not in config:
        archs = config.get("architectures") or ["LlamaGenForConditionalGeneration"]
        model, conf = _package_class(archs[0]), _package_class("LlamaGenConfig")
        if model is None or conf is None:
            return [], {}
        return [model, conf], {
            "AutoConfig": f"{BUNDLE_NAME}.{conf.__name__}",
            "AutoModel": f"{BUNDLE_NAME}.{model.__name__}",
        }
    cls = _package_class(str(config.get("_class_name", "")))
    if cls is None:
        return [], {}
    return [cls], {"AutoModel": f"{BUNDLE_NAME}.{cls.__name__}"}


def _library_class(entry: Any) -> type | None:
    """The package class a ``model_index.json`` component entry ``[library, class]`` names, if any."""
    if not isinstance(entry, list | tuple) or len(entry) != 2 or not isinstance(entry[0], str):
        return None
    library, name = entry
    if library != PACKAGE and not library.startswith(PACKAGE + "."):
        return None
    return _package_class(name)


def _load(src: Path | bytes) -> dict:
    return json.loads(src if isinstance(src, bytes) else src.read_bytes())


def _dump(config: Mapping[str, Any]) -> bytes:
    return (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()


def remote_code_files(files: Mapping[str, Path | bytes]) -> dict[str, bytes]:
    """What a push adds or replaces so the checkpoint loads with ``trust_remote_code=True`` without the package:
    path in repo -> content, given the push's ``files`` (path in repo -> local file or content).

    Model folders (``config.json`` at the root, or in a subfolder such as ``model-train/``) get ``fullvq_hf.py`` and
    ``auto_map``. A pipeline (``model_index.json`` at the root) gets one bundle of the pipeline and its components'
    classes, as ``<library>.py`` at the root (``_class_name`` becomes ``[library, class]``) and in each component
    folder of this package (``<component>/<library>.py``), where ``library`` is the module ``save_pretrained``
    recorded (``fullvq_hf.models.modeling_fvq``): diffusers resolves that name in ``sys.modules`` where the package
    is imported, and as the file next to the weights with ``trust_remote_code=True``. Other libraries' components
    are left alone."""
    out: dict[str, bytes] = {}
    if "model_index.json" in files:
        index = _load(files["model_index.json"])
        components = {k: _library_class(v) for k, v in index.items() if not k.startswith("_")}
        components = {k: v for k, v in components.items() if v is not None}
        name = index.get("_class_name")
        name = name[-1] if isinstance(name, list | tuple) and name else name  # a re-push of a pushed folder
        pipeline = _package_class(name) if isinstance(name, str) else None
        classes = ([pipeline] if pipeline else []) + list(dict.fromkeys(components.values()))
        if not classes:
            return out
        code = bundle_source(classes).encode()
        if pipeline is not None:
            index["_class_name"] = [pipeline.__module__, pipeline.__name__]
            out[f"{pipeline.__module__}.py"] = code
        for component, cls in components.items():
            library = index[component][0]
            if library == PACKAGE:  # the top-level package has no ModelMixin for diffusers' loader check
                library = index[component][0] = cls.__module__
            out[f"{component}/{library}.py"] = code
        out["model_index.json"] = _dump(index)
        return out
    for path in sorted(p for p in files if p == "config.json" or p.endswith("/config.json")):
        config = _load(files[path])
        classes, auto_map = _config_classes(config)
        if not classes:
            continue
        folder = path[: -len("config.json")]
        out[f"{folder}{BUNDLE_FILE}"] = bundle_source(classes).encode()
        out[path] = _dump({**config, "auto_map": {**config.get("auto_map", {}), **auto_map}})
    return out


__all__ = [
    "BUNDLE_FILE",
    "BUNDLE_NAME",
    "BundleError",
    "bundle_source",
    "module_closure",
    "remote_code_files",
]
