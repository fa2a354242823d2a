"""`datakit shards verify`: read every shard back and compare it with the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from datakit.cli.options import (
    app,
)

shards_app = typer.Typer(help="Inspect and check WebDataset shards.", no_args_is_help=True)
app.add_typer(shards_app, name="shards")


@shards_app.command("verify")
def shards_verify_command(
    out: Annotated[Path, typer.Argument(help="A datakit output folder (holds shards/ and "
                                        "manifest.parquet).")],
    decode: Annotated[bool, typer.Option(help="Decode every mp4 (slower, thorough).")] = True,
    repair: Annotated[bool, typer.Option(
        help="Delete shards that do not read back and mark their samples lost, so that "
        "rerunning the command that made OUT redoes them.")] = False,
) -> None:
    """Read every shard with webdataset, decode every mp4 with decord, check frame counts,
    that shards and manifest agree and that the run finished. Exits 1 on any problem."""
    from rich.console import Console
    from rich.table import Table

    from datakit.run.shards import ShardWriter, verify_shards
    from manifests.store import ManifestStore

    if not (out / "shards").is_dir():
        typer.echo(f"error: {out}: no shards/ folder (not a datakit output?)", err=True)
        raise typer.Exit(2)
    if repair:
        store = ManifestStore(out)
        lost = ShardWriter(out, store).lost_keys
        store.write_manifest()
        typer.echo(f"repair: {len(lost)} sample(s) of damaged shards marked lost; rerun the "
                   "command that made this output to redo them" if lost
                   else "repair: every committed shard reads back", err=True)
    report = verify_shards(out, decode=decode)
    console = Console()
    table = Table(title=f"shards in {out}")
    for column in ("shard", "samples", "frames", "MB", "problems"):
        table.add_column(column, justify="left" if column in ("shard", "problems") else "right")
    for shard in report.shards:
        table.add_row(shard.name, str(shard.samples), str(shard.frames),
                      f"{shard.bytes / 1e6:.2f}",
                      "; ".join(shard.problems[:3]) + (" ..." if len(shard.problems) > 3 else "")
                      or "[green]ok[/]")
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]{problem}[/]")
    if not report.ok:
        console.print("[red]verification failed[/]")
        raise typer.Exit(1)
    console.print(f"[green]ok[/]: {report.samples} samples in {len(report.shards)} shards")
