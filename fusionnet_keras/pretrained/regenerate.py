"""``make pretrained``: run the ``regenerate`` command of every registry entry's card.

``python -m fusionnet_keras.pretrained.regenerate [--dry-run] [NAME ...]`` runs, in the
current folder (the repository root under ``make``), each entry's command with the shell,
one after the other, stopping at the first failure. A new entry is regenerated as
soon as its folder is in the registry. ``--dry-run`` prints the commands only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def main(argv=None) -> int:
    from fusionnet_keras.errors import FusionNetError
    from fusionnet_keras.pretrained.registry import entries, get

    parser = argparse.ArgumentParser(prog="python -m fusionnet_keras.pretrained.regenerate",
                                     description="Regenerate the registry's models from their cards.")
    parser.add_argument("names", nargs="*", help="entries to regenerate (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    try:
        chosen = [get(n) for n in args.names] if args.names else entries()
    except FusionNetError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    if not chosen:
        print("the registry has no entries: nothing to regenerate")
    for entry in chosen:
        command = entry.card["regenerate"]
        print(f"[{entry.name}] {command}", flush=True)
        if args.dry_run:
            continue
        code = subprocess.call(command, shell=True)
        if code != 0:
            print(f"Error: regenerating {entry.name} failed (exit status {code})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
