"""Every project file a stage runs is a dependency of that stage in dvc.yaml, so editing it
reruns the stage (and nothing that does not read it is left stale by mistake)."""

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, project_repo, sh, tiny_params_dict

STAGE_MODULES = {"prepare": "ebm.pipeline.prepare", "train": "ebm.pipeline.train",
                 "classifier": "ebm.pipeline.classify", "generate": "ebm.pipeline.generate",
                 "evaluate": "ebm.pipeline.evaluate"}
NAMES_ONLY = {"ebm.config"}  # reads the registry's names, never asks it for a family
NATIVE = "ebm/families/deep/native/__init__.py"  # builds the sources beside it
NATIVE_SOURCES = [f"ebm/families/deep/native/{name}" for name in ("kernels.cc", "chain.cc", "random.h", "vectors.h")]


def module_file(name: str) -> Path | None:
    """The project file of module ``name``; None for modules outside the project and for
    packages whose ``__init__`` only re-exports (``ebm.pipeline``) or says what the folder
    holds; a package's ``__init__`` with code of its own (the family registry, the native
    kernels' build) counts."""
    if not name.startswith("ebm"):
        return None
    path = ROOT / Path(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    init = path / "__init__.py"
    return init if init.is_file() and name in ("ebm.families", "ebm.families.deep.native") else None


def imported_modules(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path``, function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from ebm import data
    return {name for name in found if module_file(name)}


def closure(start: str, family: str | None = None) -> set[str]:
    """Project files (relative to the repo) that running module ``start`` may execute; with
    ``family``, a registry lookup imports that family only (the train stage's)."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules(module_file(name))
        if "ebm.families" in imported_modules(module_file(name)) and name not in NAMES_ONLY:
            from ebm.families import REGISTRY  # the registry imports every family by name

            todo += [REGISTRY[family]] if family else list(REGISTRY.values())
    files = {str(module_file(name).relative_to(ROOT)) for name in seen}
    return files | (set(NATIVE_SOURCES) if NATIVE in files else set())


def declared(stage: dict, family: str | None = None) -> list[str]:
    """The stage's deps inside the repository; the train stage's as they resolve for ``family``
    (its working directory is the family's folder, its ``stage.yaml`` fills the slots)."""
    if family is None:
        return [dep for dep in stage["deps"] if not dep.startswith("${")]
    slots = yaml.safe_load((ROOT / f"ebm/families/{family}/stage.yaml").read_text())["stage"]
    deps = [dep.removeprefix("../../../") for dep in stage["deps"]]
    deps = [slots[dep[len("${stage."):-1]] if dep.startswith("${stage.") else dep for dep in deps]
    return [dep for dep in deps if not dep.startswith("${")]


def train_families():
    from ebm.families import REGISTRY

    return list(REGISTRY)


CASES = [(stage, None) for stage in STAGE_MODULES if stage != "train"] + [("train", f) for f in train_families()]


@pytest.mark.parametrize("stage, family", CASES)
def test_every_project_file_a_stage_runs_is_one_of_its_deps(stage, family):
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    deps = declared(spec, family)
    needed = closure(STAGE_MODULES[stage], family) | closure("ebm.entry") | {f"stages/{stage}.py"}
    missing = sorted(f for f in needed if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
    assert missing == [], f"dvc.yaml stage {stage!r} ({family or 'any family'}) runs these files but does not list them as deps"
    for dep in deps:  # source deps must exist (pipeline outputs such as reports/ appear when stages run)
        if dep.startswith(("ebm/", "stages/")):
            assert (ROOT / dep).exists(), f"dvc.yaml stage {stage!r} lists a missing dep {dep}"


def test_a_family_trains_on_its_own_code_and_params_only():
    """The train stage of one family lists no other family's folder or params section, save
    the one it builds on (the DBN's first layer is an RBM)."""
    from ebm.families import REGISTRY

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for family in REGISTRY:
        slots = yaml.safe_load((ROOT / f"ebm/families/{family}/stage.yaml").read_text())["stage"]
        assert slots["code"] == f"ebm/families/{family}"
        others = {f"ebm/families/{other}" for other in REGISTRY if other != family}
        used = {path for path in (slots["code"], slots["also_code"]) if path in others}
        assert used <= ({"ebm/families/rbm"} if family == "dbn" else set()), family
        for key in ("params", "also_params"):
            assert slots[key] in params, f"{family}: stage.yaml names a params section {slots[key]!r} that params.yaml lacks"
        assert not {slots["params"], slots["also_params"]} & (set(REGISTRY) - {family, "rbm" if family == "dbn" else family})


def test_the_import_scan_follows_function_level_imports():
    files = closure("ebm.pipeline.train")
    assert {"ebm/pipeline/train.py", "ebm/callbacks.py", "ebm/families/deep/resume.py", "ebm/families/rbm/family.py",
            "ebm/families/rbm/model.py", "ebm/families/deep/native/chain.cc"} <= files
    assert "ebm/pipeline/evaluate.py" not in files


@pytest.mark.e2e
def test_a_stage_runs_the_code_of_the_checkout_it_runs_in(tmp_path):
    """DVC runs a queued experiment's stages in a copy of the repository; they must run that
    copy's ebm package (the code whose hashes dvc.lock records), not the checkout that
    `pip install -e .` points at, which the user may be editing meanwhile."""
    repo = tmp_path / "repo"
    env = project_repo(repo, tiny_params_dict())
    with open(repo / "ebm/__init__.py", "a") as f:  # a copy that says where it was imported from
        f.write("\nfrom pathlib import Path as _P\n_P('imported-from.txt').write_text(__file__)\n")
    sh("dvc", "repro", "prepare", cwd=repo, env=env)
    marker = repo / "imported-from.txt"
    assert marker.is_file(), "the stage imported an ebm package other than this checkout's"
    assert Path(marker.read_text()).parent == repo / "ebm"
