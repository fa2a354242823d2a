"""The layers hold: no import climbs a layer, no folder cycle, manifests only on the core's I/O,
no private name imported across modules, and docs/architecture.md shows the graph as it is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_the_packages_respect_their_layers():
    _, problems = import_graph.scan()
    assert problems == []


def test_architecture_page_shows_the_current_graph():
    edges, _ = import_graph.scan()
    assert (ROOT / "docs" / "architecture.md").read_text() == import_graph.render(edges), \
        "docs/architecture.md is stale: run python tools/import_graph.py --write"


def write(root: Path, module: str, text: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_each_kind_of_violation_is_caught(tmp_path):
    write(tmp_path, "datakit.io.video", "def helper():\n    from datakit.cli import app\n")
    write(tmp_path, "manifests.store", "from datakit.run.shards import ShardWriter\n")
    write(tmp_path, "captioners.base", "from generate.checks import THRESHOLDS\n")
    write(tmp_path, "generate.checks", "from captioners.base import Captioner\n")
    write(tmp_path, "synthesize.pan_zoom", "from datakit.io.video import _private\n")
    write(tmp_path, "datakit.run.pipeline", "from datakit.io.video import encode_video\n")
    edges, problems = import_graph.scan(tmp_path)
    text = "\n".join(problems)
    assert "datakit/io/video.py:2: datakit.io imports datakit.cli, a layer above" in text
    assert "manifests may import only datakit.io, not datakit.run.shards" in text
    assert "import cycle between folders: captioners -> generate -> captioners" in text
    assert "synthesize/pan_zoom.py:1: imports private _private from datakit.io.video" in text
    assert len(problems) == 5  # datakit.run -> datakit.io is allowed: the layer below
    assert edges[("datakit.run", "datakit.io")] == 1
