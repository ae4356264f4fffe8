"""The package boundaries of ``docs/architecture.md``, checked on the code and on the Docker images.

Static checks read every import of every product module (also those inside functions, which run later);
the fresh-interpreter checks import each side's modules and look at ``sys.modules``. The image checks
follow the imports from each image's programs (its graph's nodes and its tools) and compare what they
need with what the Dockerfile copies and pip-installs.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from smolvla_bringup import graph

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"
DOC = REPO / "docs" / "architecture.md"
PACKAGES = ("smolvla_msgs", "smolvla_common", "so100_driver", "smolvla_policy", "smolvla_bringup")
ROS_EXTRA = {"rclpy", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py", "cv_bridge"}
APT_PROVIDED = {"numpy": "python3-numpy", "opencv-python-headless": "python3-opencv"}


# ------------------------------------------------------------------------------------------ the code
def product_modules() -> dict[str, Path]:
    """Every product module of the workspace (tests excluded) by dotted name."""
    modules = {}
    for package in PACKAGES:
        root = SRC / package / package
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(SRC / package).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(source: str, module: str = "", is_package: bool = False) -> set[str]:
    """Absolute module names a source imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``);
    relative imports are resolved against ``module``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imports_of_module(name: str, path: Path) -> set[str]:
    return imports_of(path.read_text(), name, path.name == "__init__.py")


def is_ros(top: str) -> bool:
    return top in ROS_EXTRA or top.endswith(("_msgs", "_srvs", "_interfaces"))


def is_third_party(top: str) -> bool:
    return (
        top not in PACKAGES and top not in sys.stdlib_module_names and not is_ros(top) and top != "__future__"
    )


@dataclass(frozen=True)
class Rule:
    module: str
    side: str
    project: frozenset[str]
    never: frozenset[str]


def table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first markdown table after ``heading`` in docs/architecture.md."""
    text = DOC.read_text()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # header and separator


def names_in(cell: str) -> frozenset[str]:
    return frozenset(re.findall(r"`([^`]+)`", cell))


def rules() -> list[Rule]:
    return [
        Rule(next(iter(names_in(cells[0]))), cells[1], names_in(cells[2]), names_in(cells[3]))
        for cells in table("## Import rules (checked)")
    ]


def rule_for(module: str, all_rules: list[Rule]) -> Rule:
    matching = [r for r in all_rules if module == r.module or module.startswith(r.module + ".")]
    assert matching, f"docs/architecture.md has no import rule for {module}"
    return max(matching, key=lambda r: len(r.module))


def violations(module: str, source: str | Path, all_rules: list[Rule]) -> list[str]:
    rule = rule_for(module, all_rules)
    own = module.split(".")[0]
    found = []
    imported = imports_of_module(module, source) if isinstance(source, Path) else imports_of(source, module)
    for top in sorted({name.split(".")[0] for name in imported}):
        if top in rule.never:
            found.append(f"{module} imports {top} ({rule.module} must never import {top})")
        elif top in PACKAGES and top != own and top not in rule.project:
            found.append(f"{module} imports {top} (not one of {rule.module}'s {sorted(rule.project)})")
    return found


def test_every_module_keeps_the_import_rules():
    all_rules = rules()
    assert {r.module for r in all_rules} >= set(PACKAGES)
    found = [v for name, path in product_modules().items() for v in violations(name, path, all_rules)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("so100_driver.arm.follower", "def f():\n    import torch\n", "must never import torch"),
        (
            "smolvla_policy.runtime.core",
            "from scservo_sdk import PortHandler\n",
            "must never import scservo_sdk",
        ),
        ("smolvla_common.qos", "from so100_driver.bus import FeetechBus\n", "must never import so100_driver"),
        ("smolvla_bringup.runner", "import smolvla_policy.policy_node\n", "must never import smolvla_policy"),
    ],
)
def test_a_forbidden_import_fails_the_check(module, source, expected):
    (found,) = violations(module, source, rules())
    assert expected in found


def node_module_imports(module: str, source: str | Path) -> list[str]:
    """The other node modules (``*_node``) that a node module imports."""
    if not module.endswith("_node"):
        return []
    imported = imports_of_module(module, source) if isinstance(source, Path) else imports_of(source, module)
    nodes = {name for name in imported if name.split(".")[-1].endswith("_node") and name.count(".") == 1}
    return sorted(nodes - {module})


def test_no_node_module_imports_another():
    found = {name: node_module_imports(name, path) for name, path in product_modules().items()}
    assert not {name: nodes for name, nodes in found.items() if nodes}
    assert node_module_imports("so100_driver.sim_node", "from so100_driver.arm_node import UNSTAMPED\n") == [
        "so100_driver.arm_node"
    ]


def test_the_demo_is_the_only_module_that_needs_both_sides():
    both = {r.module for r in rules() if {"so100_driver", "smolvla_policy"} <= r.project}
    assert both == {"smolvla_bringup.demo"}


SIDE_FORBIDDEN = {
    "robot": ("torch", "transformers", "safetensors", "tokenizers", "smolvla_policy"),
    "gpu": ("scservo_sdk", "serial", "mujoco", "so100_driver"),
}


@pytest.mark.parametrize("side", sorted(SIDE_FORBIDDEN))
def test_a_fresh_interpreter_importing_one_side_loads_nothing_of_the_other(side):
    """Import every module of one side (and the shared packages) and look at what got loaded."""
    all_rules = rules()
    sides = {"shared", side}
    modules = [m for m in product_modules() if rule_for(m, all_rules).side in sides]
    modules = [m for m in modules if not m.endswith("__main__")]
    script = (
        "import importlib, json, sys\n"
        "skipped = []\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as error:\n"
        "        if error.name not in ('launch', 'launch_ros', 'composition_interfaces'):\n"
        "            raise\n"
        "        skipped.append(name)\n"
        "print(json.dumps([sorted({m.split('.')[0] for m in sys.modules}), skipped]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded, skipped = json.loads(result.stdout.strip().splitlines()[-1])
    # without the launch packages (not on PyPI) only the launch helpers cannot be imported
    assert set(skipped) <= {"smolvla_bringup.launch_support"}, skipped
    forbidden = set(loaded) & set(SIDE_FORBIDDEN[side])
    assert len(modules) > 20 and not forbidden, f"importing the {side} side loaded {sorted(forbidden)}"


# ------------------------------------------------------------------------------------------ the images
def console_scripts() -> dict[str, str]:
    """Executable name -> module, for every package of the workspace."""
    scripts = {}
    for package in PACKAGES[1:]:
        for entry in importlib.metadata.distribution(package).entry_points:
            if entry.group == "console_scripts":
                scripts[entry.name] = entry.value.split(":")[0]
    return scripts


def closure(entries: set[str], modules: dict[str, Path]) -> set[str]:
    """The project modules reachable from ``entries`` through their imports (packages' __init__ too)."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(n for n in imports_of_module(name, modules[name]) if n in modules)
    return seen


def third_party(modules: set[str], sources: dict[str, Path]) -> dict[str, set[str]]:
    """Distribution -> the modules importing it."""
    distributions = importlib.metadata.packages_distributions()
    needed: dict[str, set[str]] = {}
    for module in modules:
        for name in imports_of_module(module, sources[module]):
            top = name.split(".")[0]
            if is_third_party(top):
                assert top in distributions, (
                    f"{module} imports {top}, which no installed distribution provides"
                )
                for dist in distributions[top]:
                    needed.setdefault(normalise(dist), set()).add(module)
    return needed


def requirements_of(distributions: set[str]) -> set[str]:
    """``distributions`` and everything they require (pinned transitive dependencies are fine)."""
    found: set[str] = set()
    todo = list(distributions)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform (its marker did not apply here)
        found.add(name)
        for requirement in requires:
            if "extra ==" not in requirement:
                todo.append(normalise(re.split(r"[\s=<>!~\[;(]", requirement, maxsplit=1)[0]))
    return found


def normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def pins(requirement_file: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in requirement_file.read_text().splitlines())
    return {normalise(re.split(r"[=<>\[;]", line)[0]) for line in lines if line and not line.startswith("-")}


@dataclass
class Image:
    name: str
    dockerfile: Path
    graph: str
    tools: frozenset[str]

    @property
    def text(self) -> str:
        return self.dockerfile.read_text()

    def packages(self) -> set[str]:
        return set(re.findall(r"^COPY src/(\w+)/ src/\1/$", self.text, re.MULTILINE))

    def requirement_files(self) -> set[str]:
        return set(re.findall(r"requirements/[\w.-]+\.txt", self.text))

    def installed(self) -> set[str]:
        return set().union(*(pins(REPO / f) for f in self.requirement_files()))

    def entries(self) -> set[str]:
        scripts = console_scripts()
        missing = sorted(self.tools - set(scripts))
        assert not missing, f"{self.name}: no console script named {missing}"
        nodes = {spec.node_class.split(":")[0] for spec in graph.GRAPHS[self.graph][1]}
        return nodes | {scripts[t] for t in self.tools} | {"smolvla_bringup.launch_support"}


def images() -> list[Image]:
    return [
        Image(
            next(iter(names_in(c[0]))),
            REPO / next(iter(names_in(c[1]))),
            next(iter(names_in(c[2]))),
            names_in(c[3]),
        )
        for c in table("## Images (checked)")
    ]


def test_both_images_are_described():
    assert {i.dockerfile.name for i in images()} == {"Dockerfile.robot", "Dockerfile.policy"}


@pytest.mark.parametrize("image", images(), ids=lambda i: i.name)
def test_each_image_installs_exactly_what_its_programs_import(image: Image):
    sources = product_modules()
    reached = closure(image.entries(), sources)
    packages = {m.split(".")[0] for m in reached} | {"smolvla_msgs"}
    assert image.packages() == packages, (
        f"{image.name} copies {sorted(image.packages())}, needs {sorted(packages)}"
    )
    needed = third_party(reached, sources)
    apt = {d for d in needed if d in APT_PROVIDED}
    for dist in apt:  # apt-provided: the importing packages must declare the rosdep key
        for package in {m.split(".")[0] for m in needed[dist]}:
            manifest = (SRC / package / "package.xml").read_text()
            assert f"<exec_depend>{APT_PROVIDED[dist]}</exec_depend>" in manifest, (package, dist)
    installed = image.installed()
    missing = {d: sorted(needed[d]) for d in set(needed) - apt - installed}
    assert not missing, f"{image.name} lacks {missing}"
    unused = installed - requirements_of(set(needed)) - set(APT_PROVIDED)
    assert not unused, f"{image.name} installs {sorted(unused)}, which none of its programs needs"


@pytest.mark.parametrize("package", PACKAGES[1:])
def test_ros_packages_imported_are_declared_in_package_xml(package):
    """rosdep installs what package.xml declares: every ROS package a module imports must be there."""
    manifest = (SRC / package / "package.xml").read_text()
    declared = set(re.findall(r"<(?:exec_)?depend>([\w]+)</(?:exec_)?depend>", manifest))
    used = set()
    for name, path in product_modules().items():
        if name.split(".")[0] == package:
            used |= {n.split(".")[0] for n in imports_of_module(name, path) if is_ros(n.split(".")[0])}
    used -= {"cv_bridge"}  # optional: image_conversion uses it only where a full ROS install has it
    assert used <= declared, f"{package}/package.xml lacks {sorted(used - declared)}"
