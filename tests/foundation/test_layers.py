"""labkit's layers only import downward: core -> data -> models -> methods -> reports -> studies -> runner/cli."""

import ast
from pathlib import Path

import labkit

LAYERS = ["core", "data", "models", "methods", "reports", "studies", "runner", "cli"]
PACKAGE = Path(labkit.__file__).parent


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[0] == "labkit" and parts[1] in LAYERS else None


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        own = LAYERS.index(rel.parts[0].removesuffix(".py")) if rel.parts[0].removesuffix(".py") in LAYERS else None
        if own is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            )
            for name in names:
                target = _layer(name)
                if target is not None and target > own:
                    violations.append(f"{rel}:{node.lineno} imports {name}")
    assert not violations, "lower layers import higher ones:\n" + "\n".join(violations)
