"""The import layering of trainer/ (docs/architecture.md): no cycles, each layer imports only layers
below it, role packages never import each other, torch-free modules stay torch-free, and only
trainer/dist.py touches torch.distributed. Read from the source with ast, and checked in a fresh
interpreter where it is about what actually gets imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers.common import ROOT

TRAINER = ROOT / "trainer"
# Layers, lowest first; a module imports only from its own layer or below. A role package is a layer
# of its own whose modules import each other, the layers below, and no other role package.
BASE = {"trainer.config", "trainer.errors", "trainer.seeding"}
CORE = {"trainer.dist", "trainer.model", "trainer.optim", "trainer.step", "trainer.ema", "trainer.mixing",
        "trainer.tta"}
ROLES = ("trainer.data", "trainer.resilience", "trainer.monitoring")
TOP = {"trainer.start", "trainer.loop", "trainer.validate", "trainer.__main__", "trainer.evaluate",
       "trainer.export", "trainer.plot", "trainer.summary"}
# Role-to-role edges that are allowed, with the reason.
ALLOWED = {
    ("trainer.data.loader", "trainer.resilience.lifecycle"),  # DataLoader workers die with their rank
}
TORCH_FREE = ("trainer.config", "trainer.errors", "trainer.resilience.dirlock", "trainer.resilience.lifecycle")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in TRAINER.rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The trainer modules `path` imports anywhere in its body (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:  # `from trainer.data import storage` names a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known and m != "trainer" and not known[m].name == "__init__.py"}


def layer(module: str) -> tuple[int, str]:
    if module in BASE:
        return 0, "base"
    if module in CORE:
        return 1, "core"
    for role in ROLES:
        if module.startswith(role + "."):
            return 2, role
    assert module in TOP, f"{module} is in no layer of this test: add it to BASE, CORE, a role package or TOP"
    return 3, "top"


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(p, known) for m, p in known.items() if p.name != "__init__.py"}


def test_no_import_cycle_between_modules():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(edges[m]):
            assert state.get(n) != 1, f"import cycle: {' -> '.join(path[path.index(n):] + [n])}"
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_each_layer_imports_only_its_own_and_lower_layers_and_roles_never_each_other():
    wrong = []
    for m, targets in sorted(graph().items()):
        level, name = layer(m)
        for t in sorted(targets):
            t_level, t_name = layer(t)
            if t_level > level or (t_level == level == 2 and t_name != name and (m, t) not in ALLOWED):
                wrong.append(f"{m} ({name}) imports {t} ({t_name})")
    assert not wrong, "\n".join(wrong)


def test_role_package_inits_are_empty():
    for role in ROLES:
        init = TRAINER / role.split(".")[1] / "__init__.py"
        assert init.read_text().strip() == "", f"{init} must stay empty (so its torch-free modules stay torch-free)"


def test_torch_free_modules_do_not_load_torch():
    code = (f"import sys; import {', '.join(TORCH_FREE)}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", f"importing {TORCH_FREE} loads torch: {out.stdout.strip()[:200]}"


def test_only_dist_touches_torch_distributed():
    users = []
    for m, path in sorted(modules().items()):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = [f"{node.value.id}.{node.attr}"]
            if any(n == "torch.distributed" or n.startswith(("torch.distributed.", "torch.nn.parallel"))
                   for n in names):
                users.append(m)
    assert set(users) <= {"trainer.dist"}, f"only trainer/dist.py may use torch.distributed: {sorted(set(users))}"
