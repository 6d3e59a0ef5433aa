"""The ``handanno`` command line: click only; each command parses options and calls one library function."""

from __future__ import annotations

import logging
import sys

import click

from handanno import __version__
from handanno.errors import HandannoError

log = logging.getLogger("handanno")


class _Group(click.Group):
    """Turns HandannoError into a one-line message and exit code 2, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HandannoError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="handanno")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """handanno: annotate hands automatically from calibrated multi-camera captures."""
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()
