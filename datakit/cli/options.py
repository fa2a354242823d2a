"""What the commands share: the typer app, the `command` decorator that turns UserErrors into
one line, the shared options and their parsers, and the run summary."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from datakit.io.errors import UserError, require_extra

app = typer.Typer(
    name="datakit",
    help="Build text-to-video training data as WebDataset shards, and generate long videos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: option names never cut at 80 columns
)


def print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"datakit {version('datakit')}")
        except PackageNotFoundError:
            typer.echo("datakit (not installed as a package)")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Build text-to-video training data as WebDataset shards, and generate long videos."""


def command(name: str, **kwargs) -> Callable[[Callable], Callable]:
    """Register a command whose `UserError`s end as one line on stderr and their exit code."""

    def register(function: Callable) -> Callable:
        @functools.wraps(function)
        def run(*args, **kw):
            try:
                return function(*args, **kw)
            except UserError as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(error.exit_code) from None

        app.command(name, **kwargs)(run)
        return function

    return register

# Options shared by the shard-writing pipelines.
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; a rerun "
                                         "on the same folder resumes).")]
WorkersOption = Annotated[int, typer.Option(help="Worker processes (default: the number of "
                                            "cores; 1 runs everything in this process).",
                                            min=0)]
ShardSizeOption = Annotated[int, typer.Option(help="Samples per shard.", min=1)]
ShardBytesOption = Annotated[str, typer.Option(
    help="Also start a new shard once a shard reaches this size, e.g. 256MB or 1GB.")]
RetryOption = Annotated[bool, typer.Option(help="Redo inputs an earlier run recorded as failed.")]
OverwriteOption = Annotated[bool, typer.Option(
    help="Delete datakit's earlier outputs in --out first instead of resuming.")]
class Engine(str, Enum):
    local = "local"
    ray = "ray"


EngineOption = Annotated[Engine, typer.Option(
    help="local (a process pool on this machine) or ray (Ray Data: this machine, or a "
    "cluster with --ray-address; pip install 'datakit[ray]').")]
RayAddressOption = Annotated[str | None, typer.Option(
    help="--engine ray: the cluster to join ('auto' for the one this machine belongs to); "
    "default: start Ray here with --workers CPUs.")]
SampleTimeoutOption = Annotated[float | None, typer.Option(
    help="Seconds one input may take (a decoder that hangs): past it the input is failed "
    "as timed out, its worker killed, and the run goes on. Local engine.", min=0.1)]
AppendOption = Annotated[bool, typer.Option(
    help="Add this SRC's inputs to an --out made from another SRC (refused without it).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
SeedOption = Annotated[int, typer.Option(help="Seed for every random choice (with the key).",
                                          min=0)]


class Watermarks(str, Enum):
    keep = "keep"
    flag = "flag"
    strip = "strip"
    drop = "drop"


# Options shared by every pipeline that checks for watermarks.
WatermarksOption = Annotated[Watermarks, typer.Option(
    help="What to do with watermarks: keep (do not check), flag (record watermark_score and "
    "watermark_box in the json and manifest), strip (remove the mark), drop (skip the sample "
    "with status watermarked).")]
WatermarkModelOption = Annotated[str | None, typer.Option(
    help="LAION watermark classifier (efficientnet_b3a weights: .safetensors, or .pt read "
    "with weights_only; a file or a folder holding one); without it, weights-free "
    "heuristics only.")]
WatermarkThresholdOption = Annotated[float, typer.Option(
    help="Heuristic score (0..1) at which a mark counts as found.", min=0.0, max=1.0)]
WatermarkClassifierThresholdOption = Annotated[float, typer.Option(
    help="Classifier pwatermark at which an image counts as watermarked (LAION used 0.8; "
    "0.5 flags ordinary text).", min=0.0, max=1.0)]
WatermarkDeviceOption = Annotated[str, typer.Option(
    metavar="DEVICE", help="Where the watermark classifier runs: auto (CUDA when there is "
    "one), cpu, cuda, cuda:N. Only used with --watermark-model.")]


def watermark_config(action: Watermarks, model: str | None, threshold: float,
                     classifier_threshold: float, device: str = "auto"):
    """The `WatermarkConfig` for the shared watermark options; bad values are UserErrors."""
    from synthesize.watermark import WatermarkConfig

    if model is not None:
        require_extra("caption", "--watermark-model", "torch")
    try:
        return WatermarkConfig(action=action.value, model=model, threshold=threshold,
                               classifier_threshold=classifier_threshold, device=device)
    except ValueError as error:
        raise UserError(str(error)) from None


def parse_colour(text: str, option: str = "--background") -> tuple[int, int, int]:
    """'grey', '#808080' or '128,128,128' -> (128, 128, 128)."""
    names = {"grey": (128, 128, 128), "gray": (128, 128, 128), "black": (0, 0, 0),
             "white": (255, 255, 255)}
    value = text.strip().lower()
    if value in names:
        return names[value]
    if re.fullmatch(r"#[0-9a-f]{6}", value):
        return tuple(int(value[i:i + 2], 16) for i in (1, 3, 5))
    parts = value.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)
    raise UserError(f"{option}: expected grey, black, white, #RRGGBB or R,G,B (0..255), "
                    f"got {text!r}")


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """'512x320' -> (512, 320); both even and at least 16."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise UserError(f"{option}: expected WIDTHxHEIGHT such as 512x320, got {text!r}")
    width, height = int(match[1]), int(match[2])
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise UserError(f"{option}: width and height must be even and at least 16, got {text!r}")
    return width, height


def parse_bytes(text: str | None, option: str = "--shard-bytes") -> int | None:
    """'256MB' -> 256000000, '1GiB' -> 1073741824; empty -> None."""
    if not text:
        return None
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = units.get(match[2].lower()) if match else None
    size = int(float(match[1]) * unit) if unit else 0
    if size < 1:
        raise UserError(f"{option}: expected a size such as 256MB or 1GiB, got {text!r}")
    return size


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def engine_options(options, engine: Engine, address: str | None, gpus: float = 0.0,
                   model_workers: int = 1):
    """`RunOptions` with the engine settings; Ray's options need Ray installed."""
    import dataclasses

    if engine is Engine.ray:
        require_extra("ray", "--engine ray", "ray")
        if options.sample_timeout is not None:
            raise UserError("--sample-timeout works with the local engine (Ray retries and "
                            "times out tasks with its own settings)")
    elif address or gpus or model_workers != 1:
        raise UserError("--ray-address, --gpus-per-worker and --model-workers need --engine ray")
    return dataclasses.replace(options, engine=engine.value, ray_address=address,
                               gpus_per_worker=gpus, model_workers=model_workers)


def check_source(src: Path) -> None:
    if not src.exists():
        raise UserError(f"{src}: no such file or folder")


def print_summary(stats: dict, out: Path, title: str) -> None:
    """Counts by status, the commonest errors and where the outputs are."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    table = Table(title=title, show_header=True)
    table.add_column("status")
    table.add_column("rows", justify="right")
    for status, count in stats["status"].items():
        table.add_row(status, str(count))
    console.print(table)
    errors = list(stats["errors"].items())
    shown = errors[:10]
    kinds = stats.get("error_kinds", len(errors))
    if errors:
        which = f"the {len(shown)} most common of {kinds} kinds" if kinds > len(shown) else \
            "by kind"
        console.print(f"reasons ({which}; every row's reason is in the manifest's error "
                      "column):")
    for error, count in shown:
        console.print(f"  {count} x {error}")
    run = stats["run"]
    console.print(
        f"this run: {run['processed']} inputs in {run['seconds']:.1f} s, start-up included "
        f"({run['per_second'] or 0:.2f}/s); {stats.get('resumed_keys', 0)} keys were already "
        "done"
    )
    for note, count in (stats.get("notes") or {}).items():
        console.print(f"  note: {count} x {note} (the manifest's notes column says which)")
    changed = stats.get("changed_inputs")
    if changed:
        console.print(f"[yellow]{changed['count']} input(s) changed since they were written "
                      f"(e.g. {changed['examples'][0]}); they were not redone: --overwrite "
                      "redoes everything[/]")
    if stats.get("redone_from_damaged_shards"):
        console.print(f"[yellow]{stats['redone_from_damaged_shards']} sample(s) of damaged "
                      "shards were redone[/]")
    if stats.get("interrupted"):
        console.print(f"[yellow]stopped by {stats.get('stopped_by', 'a signal')}: rerun the "
                      "same command to resume[/]")
    console.print(f"shards: {out / 'shards'}  manifest: {out / 'manifest.parquet'}  "
                  f"stats: {out / 'stats.json'}")


def exit_if_stopped(stats: dict) -> None:
    """A run stopped by SIGINT or SIGTERM exits 128 + the signal (130, 143), as shells expect."""
    import signal

    name = stats.get("stopped_by")
    if stats.get("interrupted") and name:
        ignore_signals_while_exiting()  # the user's second Ctrl-C has nothing left to stop
        raise typer.Exit(128 + signal.Signals[name].value)


def exit_if_every_input_failed(stats: dict) -> None:
    """A run in which every input failed exits 1 with the cause in one line (the summary above
    lists the rest); an all-skipped run is not a failure and exits 0."""
    cause = stats.get("every_input_failed")
    if cause:
        typer.echo(f"error: {cause}", err=True)
        raise typer.Exit(1)


def ignore_signals_while_exiting() -> None:
    """Once the command is on its way out, a further Ctrl-C or SIGTERM (a scheduler that
    signals twice) must not interrupt the interpreter's own clean-up."""
    import signal

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
