"""What is installed is what was tested: the environment the suite runs in holds exactly the
versions of uv.lock (`make test` syncs it with `uv sync --frozen`), and every package the
product imports directly is declared in pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("crawler", "scheduler", "storage")
# Installers and the project itself: present in any environment, not resolved by the lock.
NOT_LOCKED = {"pip", "setuptools", "wheel", "newsmon"}
# Distributions whose import name differs from their name.
IMPORT_NAMES = {"Stemmer": "pystemmer", "yaml": "pyyaml", "prometheus_client": "prometheus-client",
                "scrapy_playwright": "scrapy-playwright", "lxml_html_clean": "lxml-html-clean"}


def _lock() -> dict[str, list[dict]]:
    """uv.lock's packages by name; a name has several entries where the resolution forks (a
    newer release for newer Pythons), and then each edge names its version."""
    data = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    packages: dict[str, list[dict]] = {}
    for package in data["package"]:
        packages.setdefault(canonicalize_name(package["name"]), []).append(package)
    return packages


def _marker_holds(dependency: dict, extras: set[str]) -> bool:
    marker = dependency.get("marker")
    if not marker:
        return True
    return any(Marker(marker).evaluate({"extra": extra}) for extra in extras or {""})


def locked_for_this_environment(extras: set[str]) -> dict[str, str]:
    """{name: version} of every locked package that this platform installs for the project
    with ``extras``, following uv.lock's dependency edges and their markers."""
    packages = _lock()
    root = packages["newsmon"][0]
    edges = list(root.get("dependencies", []))
    for extra in extras:
        edges += root.get("optional-dependencies", {}).get(extra, [])
    wanted = [edge for edge in edges if _marker_holds(edge, extras)]
    found: dict[str, str] = {}
    seen: set[tuple[str, str, frozenset[str]]] = set()
    while wanted:
        edge = wanted.pop()
        name, with_extras = canonicalize_name(edge["name"]), frozenset(edge.get("extra", []))
        candidates = [p for p in packages[name] if p["version"] == edge.get("version", p["version"])]
        assert len(candidates) == 1, f"uv.lock: {name} is ambiguous: {edge}"
        package = candidates[0]
        if (name, package["version"], with_extras) in seen:
            continue
        seen.add((name, package["version"], with_extras))
        found[name] = package["version"]
        nested = list(package.get("dependencies", []))
        for extra in with_extras:
            nested += package.get("optional-dependencies", {}).get(extra, [])
        wanted += [e for e in nested if _marker_holds(e, set(with_extras))]
    return found


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_the_environment_is_exactly_the_lock() -> None:
    """Every locked package of this platform is installed at its locked version, and nothing
    else is installed: a fresh `make test` on another day gets what this run tested."""
    extras = {"test"} | ({"bench"} if "ahocorasick" in sys.modules or _installed_bench() else set())
    locked = locked_for_this_environment(extras)
    have = installed()
    wrong = {name: (version, have.get(name)) for name, version in locked.items() if have.get(name) != version}
    assert not wrong, f"installed versions differ from uv.lock (run `make test` to sync): {wrong}"
    extra = sorted(set(have) - set(locked) - NOT_LOCKED)
    assert not extra, f"installed but not in uv.lock: {extra}"


def _installed_bench() -> bool:
    try:
        metadata.version("pyahocorasick")
    except metadata.PackageNotFoundError:
        return False
    return True


def test_the_lock_resolves_html_cleaning_for_trafilatura() -> None:
    """lxml 6.2 dropped its html_clean extra: lxml_html_clean must be in the lock in its own
    right, or `import trafilatura` fails (justext imports lxml.html.clean)."""
    assert "lxml-html-clean" in locked_for_this_environment(set())
    import trafilatura  # noqa: F401  - the import that broke on a fresh install


def _third_party_imports() -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    names: set[str] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in stdlib and n not in PRODUCT and n != "__future__"}


def test_every_direct_import_is_declared() -> None:
    """`pip install .` alone must bring every package the product imports (not only those its
    dependencies happen to pull in), and nothing declared goes unused."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    imported = {canonicalize_name(IMPORT_NAMES.get(n, n)) for n in _third_party_imports()}
    # Used without an import statement of ours: a SQLAlchemy driver, morphology data and the
    # html-cleaning module that trafilatura's justext imports.
    indirect = {"psycopg", "pymorphy3-dicts-ru", "lxml-html-clean"}
    assert imported - declared == set(), "imported but not declared in pyproject.toml"
    assert declared - imported - indirect == set(), "declared but never imported"
