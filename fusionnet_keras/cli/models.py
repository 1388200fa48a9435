"""``fusionnet-keras models [NAME]``: the registry of shipped models, or one model's card."""

from __future__ import annotations

import click

from fusionnet_keras.cli.options import handle_errors


@click.command()
@click.argument("name", required=False)
@handle_errors
def models(name):
    """List the shipped models (name, task, size, headline score), or print the card of NAME.

    A name can be given to --weights of predict and affinities (and --classifier of
    segment for 3-D models); the model marked * is the default of its task.
    """
    from fusionnet_keras.pretrained.registry import entries, get, registry_dir

    if name is not None:
        entry = get(name)
        click.echo((entry.folder / "card.md").read_text(encoding="utf-8").rstrip())
        click.echo(f"\n(machine-readable card: {entry.folder / 'card.toml'})")
        return
    found = entries()
    if not found:
        click.echo(f"no models in the registry {registry_dir()} yet; pass --weights FILE.keras")
        return
    width = max(len(e.name) for e in found) + 2
    click.echo(f"{'name':<{width}}{'task':<16}{'size':>9}  score")
    for e in found:
        mark = "*" if e.card.get("default", False) else " "
        click.echo(f"{e.name + mark:<{width}}{e.task:<16}{e.size / 1e6:>7.1f} MB  {e.headline}")
    click.echo("* the default of its task; 'fusionnet-keras models NAME' prints a model's card")
