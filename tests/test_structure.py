"""The shape of the project: job scripts are imported by nothing, and the imports between modules point one way."""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB_SCRIPTS = {"train", "bench", "recipe", "grow", "sample"}  # and every data/<corpus>/prepare.py


def project_modules() -> dict[str, Path]:
    """Every module of the project by its import name: top-level files, the data package, the inheritune
    package, the prepare scripts and scripts/."""
    files = [*ROOT.glob("*.py"), *ROOT.glob("data/**/*.py"), *ROOT.glob("inheritune/*.py"), *ROOT.glob("scripts/*.py")]
    names = {}
    for f in files:
        parts = f.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return names


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def is_job_script(name: str) -> bool:
    return name in JOB_SCRIPTS or (name.startswith("data.") and name.endswith(".prepare"))


def test_no_module_imports_a_job_script():
    modules = project_modules()
    importers = {
        name: sorted(job for job in imports_of(path, set(modules)) if is_job_script(job))
        for name, path in modules.items()
    }
    assert {name: jobs for name, jobs in importers.items() if jobs} == {}


def test_model_imports_nothing_of_the_project_at_its_top():
    """GPT.from_pretrained reads Hugging Face weights through hf.py, imported inside it."""
    modules = project_modules()
    tree = ast.parse(modules["model"].read_text())
    top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = {alias.name for node in top if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in top if isinstance(node, ast.ImportFrom) and node.module}
    assert names & set(modules) == set()


def test_the_imports_between_modules_have_no_cycle():
    modules = project_modules()
    graph = {name: imports_of(path, set(modules)) - {name} for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", " -> ".join([*path, name, other])
            if other not in state:
                visit(other, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_no_file_of_the_project_edits_sys_path():
    """Scripts run by path from a subfolder import the installed project (pyproject's setuptools list)."""
    edits = {name: path for name, path in project_modules().items() if "sys.path" in path.read_text()}
    assert edits == {}


def test_the_install_lists_every_module_and_package():
    import tomllib  # Python 3.11's; the project itself runs on 3.10

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(setuptools["py-modules"]) == sorted(f.stem for f in ROOT.glob("*.py"))
    assert sorted(setuptools["packages"]) == sorted(f.parent.name for f in ROOT.glob("*/__init__.py"))


def test_a_prepare_script_runs_by_path_from_any_folder(tmp_path):
    """What `make` installs: the project's modules import without the repo on sys.path or PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    script = ROOT / "data" / "shakespeare" / "prepare.py"
    done = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--out_dir" in done.stdout
