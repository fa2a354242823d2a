"""`datakit report`: a static HTML page of any dataset datakit wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datakit.cli.options import (
    QuietOption,
    command,
)


@command("report")
def report_command(
    src: Annotated[Path, typer.Argument(help="A datakit output folder (manifest.parquet, "
                                        "shards/, stats.json) or a folder of WebDataset "
                                        "shards with mp4 members.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report folder (default: "
                                             "SRC/report).")] = None,
    samples: Annotated[int, typer.Option(help="Clips on the contact sheet.", min=0)] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the clip choice.", min=0)] = 0,
    quiet: QuietOption = False,
) -> None:
    """Write a static HTML report of a dataset: summary, contact sheet, plots, failures.

    Statistics come from the manifest (the shards are scanned only when there is none);
    only the chosen clips are read from the shards. The page works from file:// offline.
    Prints the path of index.html.

    Example: datakit report out/ --samples 64 --seed 0
    """
    from datakit.run.dataset_report import write_dataset_report

    index = write_dataset_report(src, out, samples=samples, seed=seed, progress=not quiet)
    typer.echo(str(index))
