"""Every check promptdock runs, locally and in CI: ``nox -t ci`` runs the CI set.

Sibling distributions are always installed together in one call, so ``promptdock`` never comes
from the package index by accident.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests_core", "tests_all"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
CORE = "core"
PLUGINS = {"filesystem": "plugins/filesystem", "bitbucket": "plugins/bitbucket"}
EXAMPLE_PLUGIN = "examples/third-party-plugin"


def _editable(*paths: str) -> list[str]:
    return [arg for path in paths for arg in ("-e", path)]


def _all_packages() -> list[str]:
    return _editable(f"{CORE}[proxy]", *PLUGINS.values())


@nox.session(tags=["ci"])
def lint(session: nox.Session) -> None:
    """Ruff (lint, format check) and the import-linter rule: core never imports a plugin."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"), *_all_packages())
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(tags=["ci"])
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the packages, the tests and this file."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "typecheck"), *_all_packages())
    session.run(
        "mypy",
        "core/src/promptdock",
        *(f"{p}/src" for p in PLUGINS.values()),
        "tests",
        "noxfile.py",
    )


@nox.session(tags=["ci"])
def tests_core(session: nox.Session) -> None:
    """The core alone, with no plugin installed: it must import, run and explain what is missing."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"), *_editable(CORE))
    session.run("pytest", "tests/core", *session.posargs)


@nox.session
@nox.parametrize("plugin", list(PLUGINS))
def tests_plugin(session: nox.Session, plugin: str) -> None:
    """One plugin with the core: ``nox -s "tests_plugin(filesystem)"``."""
    session.install(
        *nox.project.dependency_groups(PYPROJECT, "test"), *_editable(CORE, PLUGINS[plugin])
    )
    session.run("pytest", f"tests/plugins/{plugin}", *session.posargs)


@nox.session(tags=["ci"])
def tests_all(session: nox.Session) -> None:
    """The whole suite with every distribution installed."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"), *_all_packages())
    session.run("pytest", *session.posargs)


@nox.session(tags=["ci"])
def example_plugin(session: nox.Session) -> None:
    """The example third-party plugin (docs/writing-plugins.md), installed, passes the contract."""
    test_deps = nox.project.dependency_groups(PYPROJECT, "test")
    session.install(*test_deps, f"./{CORE}", f"./{EXAMPLE_PLUGIN}")
    session.run("pytest", f"{EXAMPLE_PLUGIN}/tests", "-p", "no:cacheprovider", *session.posargs)


@nox.session(tags=["ci"])
def dist(session: nox.Session) -> None:
    """Build wheels, install them outside the workspace, smoke-test entry-point discovery."""
    session.install("build")
    out = Path(tempfile.mkdtemp(prefix="promptdock-dist-"))
    for path in (CORE, *PLUGINS.values()):
        session.run("python", "-m", "build", "--wheel", "--outdir", str(out), path)
    wheels = sorted(str(p) for p in out.glob("*.whl"))
    core_wheel = next(w for w in wheels if Path(w).name.startswith("promptdock-0"))
    smoke = str(ROOT / "tests" / "dist_smoke.py")
    with session.chdir(out):
        session.install(core_wheel)
        session.run("python", smoke, "core-only")
        session.install(*wheels)
        session.run("python", smoke, "with-plugins")
    shutil.rmtree(out, ignore_errors=True)


@nox.session(tags=["ci"])
def docs(session: nox.Session) -> None:
    """The docs: links resolve, runnable examples run, every hook is documented and tested."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"), *_all_packages())
    session.run("pytest", "tests/test_docs.py", "tests/test_meta.py", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with LiteLLM and the floor: bench/REPORT.md, results.json, plots."""
    session.install(*_all_packages(), "matplotlib", "uv", "aiohttp>=3.9")
    session.run(
        "python",
        "-m",
        "bench",
        "--litellm-venv",
        str(ROOT / ".nox" / "bench-litellm"),
        *session.posargs,
        env={"PYTHONHASHSEED": "0"},
    )


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """The security suite with 5,000 fuzz inputs per parser and every fault case."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "test"), *_all_packages())
    session.run(
        "pytest",
        "tests/security",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={
            "PROMPTDOCK_FUZZ_EXAMPLES": "5000",
            "PROMPTDOCK_SECURITY_FULL": "1",
            "PROMPTDOCK_FIGURES": "security-figures.json",
        },
    )


@nox.session(default=False)
def load(session: nox.Session) -> None:
    """The proxy under 50,000 requests at concurrency 64 with a push in the middle."""
    session.install(*_all_packages(), "aiohttp>=3.9")  # the load generator
    session.run(
        "python",
        "bench/load_proxy.py",
        "--requests",
        "50000",
        "--concurrency",
        "64",
        "--json",
        "load-figures.json",
        *session.posargs,
    )
