"""``clipdex model export``: the ONNX export of the configured model, made ahead of the first search."""

from __future__ import annotations

import click

from retrieval.cli.common import Run, cli, common_options, echo
from retrieval.errors import ClipdexError


@cli.group()
def model() -> None:
    """The configured model's files."""


@model.command("export")
@click.option("--force", is_flag=True, help="Export again even where a sound export of this model exists.")
@common_options
def export(run: Run, force: bool) -> None:
    """Export the model's towers to ONNX Runtime (fp32, and int8 where it stays close), so searches need no torch."""
    from retrieval.model.onnx_files import ExportProblem, find_export
    from retrieval.model.source import check_source

    settings = run.settings.model
    check_source(settings)
    try:
        done = None if force else find_export(settings)
        if done is None or not done.sizes_ok() or done.unexportable:
            from retrieval.model.export import export_model

            done = export_model(settings)
    except ExportProblem as exc:
        raise ClipdexError(str(exc)) from None
    if done.unexportable:
        raise ClipdexError(f"model {settings.name} cannot run on ONNX Runtime: {done.unexportable} "
                           "(its searches run on torch)")
    towers = done.manifest["towers"]
    rows = [{"tower": tower, "precision": precision, "file": str(done.folder / entry["file"]), "bytes": entry["bytes"],
             "cosine": entry["cosine"]}
            for tower, variants in towers.items() for precision, entry in variants.items() if isinstance(entry, dict)]

    def human() -> None:
        echo(f"exported {settings.name} to {done.folder}")
        for row in rows:
            echo(f"  {row['tower']:<8} {row['precision']:<5} {row['bytes'] / 1e6:8.1f} MB  cosine {row['cosine']}"
                       f"  {row['file']}")
        for tower, variants in towers.items():
            if variants.get("int8_skipped"):
                echo(f"  {tower:<8} int8  not kept: {variants['int8_skipped']}")

    run.emit({"folder": str(done.folder), "files": rows}, human)
