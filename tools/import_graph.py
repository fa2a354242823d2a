"""Read every import in the packages and check the layers they must respect.

Usage: `python tools/import_graph.py` prints the folder graph and any violation (exit 1 on
one); `--write` also rewrites docs/architecture.md. tests/test_layers.py runs the same checks.

A layer may import layers below it, and stages may import each other sideways, but nothing
imports upward, the folder graph has no cycle, `manifests` imports only the core's I/O, and
no module imports another module's private (`_name`) names. Imports inside functions count:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datakit", "captioners", "synthesize", "generate", "manifests")
# folder -> layer rank; an import may only go to an equal or lower rank
LAYERS = {
    "datakit.cli": 4,
    "captioners": 3, "synthesize": 3, "generate": 3,
    "datakit.run": 2,
    "manifests": 1, "datakit.models": 1,
    "datakit.io": 0,
}
ONLY_IMPORTS = {"manifests": {"datakit.io"}}
DOC = ROOT / "docs" / "architecture.md"


def folder_of(module: str) -> str | None:
    """The layer folder a dotted module name belongs to (None outside the packages)."""
    for folder in sorted(LAYERS, key=len, reverse=True):
        if module == folder or module.startswith(folder + "."):
            return folder
    return None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def scan(root: Path = ROOT) -> tuple[dict[tuple[str, str], int], list[str]]:
    """The folder-to-folder edges with their import counts, and every violation found."""
    edges: dict[tuple[str, str], int] = {}
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            source = folder_of(module_name(path, root))
            if source is None:
                continue
            where = path.relative_to(root)
            for module, names, line in imports_of(path):
                target = folder_of(module)
                if target is None:
                    continue
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private and module != module_name(path, root):
                    problems.append(f"{where}:{line}: imports private {', '.join(private)} "
                                    f"from {module}")
                if target == source:
                    continue
                edges[(source, target)] = edges.get((source, target), 0) + 1
                if LAYERS[target] > LAYERS[source]:
                    problems.append(f"{where}:{line}: {source} imports {module}, a layer above")
                allowed = ONLY_IMPORTS.get(source)
                if allowed is not None and target not in allowed:
                    problems.append(f"{where}:{line}: {source} may import only "
                                    f"{', '.join(sorted(allowed))}, not {module}")
    problems += [f"import cycle between folders: {' -> '.join(cycle)}"
                 for cycle in find_cycles(edges)]
    return edges, problems


def find_cycles(edges) -> list[list[str]]:
    """One cycle through each folder that lies on one (depth-first search)."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def render(edges) -> str:
    """docs/architecture.md: the layers and the folder graph as a Mermaid diagram."""
    ids = {folder: folder.replace(".", "_") for folder in LAYERS}
    lines = ["# Architecture: who imports whom", "",
             "Made by `python tools/import_graph.py --write` from the imports in the code (lazy "
             "imports inside functions included); `tests/test_layers.py` fails when the code and "
             "this page disagree, or when an import climbs a layer.", "",
             "Layers, top to bottom. A folder imports only folders on its own row (stages, "
             "sideways, never in a cycle) or below; `manifests` imports only `datakit.io`; no "
             "module imports another's private names.", "",
             "| layer | folders | holds |", "|---|---|---|"]
    holds = {
        4: "the commands: one module per command, shared options, the demo and its samples",
        3: "the stages: captioning, pan-zoom and watermarks, long-video generation and checks",
        2: "the runner: records to shards and manifest, local and Ray engines, shard "
           "reader/verifier, dataset report",
        1: "input sources, manifest schema, store and statistics; shared model helpers (CLIP, "
           "tiny test models)",
        0: "core I/O: video, images, clip cutting, shot detection, atomic files, errors",
    }
    for rank in sorted(set(LAYERS.values()), reverse=True):
        folders = ", ".join(f"`{f}`" for f in LAYERS if LAYERS[f] == rank)
        lines.append(f"| {rank} | {folders} | {holds[rank]} |")
    lines += ["", "```mermaid", "flowchart TD"]
    lines += [f"    {ids[f]}[{f}]" for f in LAYERS]
    lines += [f"    {ids[s]} --> {ids[t]}" for s, t in sorted(edges)]
    lines += ["```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    edges, problems = scan()
    if "--write" in sys.argv[1:]:
        DOC.write_text(render(edges))
    for (source, target), count in sorted(edges.items()):
        print(f"{source} -> {target} ({count})")
    for problem in problems:
        print(f"violation: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
