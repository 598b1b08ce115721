"""Entry point of the `isola` command: the top-level group and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click
from rich.markup import escape

from isola import __version__, errors
from isola.cli.output import stderr


class IsolaGroup(click.Group):
    """A click group that turns `IsolaError` into one readable line and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.IsolaError as err:
            stderr.print(f"[bold red]isola: error:[/] {escape(err.message)}")
            if err.hint:
                stderr.print(f"[dim]hint: {escape(err.hint)}[/]")
            sys.exit(errors.exit_code(err))
        except KeyboardInterrupt:
            stderr.print("isola: interrupted")
            sys.exit(130)
        except BrokenPipeError:  # the reader (head, less) went away: not an error worth a word
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug in isola: say so plainly, show the trace only when asked
            if os.environ.get("ISOLA_DEBUG"):
                traceback.print_exc()
            stderr.print(f"isola: internal error: {type(exc).__name__}: {exc} (set ISOLA_DEBUG=1 for the traceback)")
            sys.exit(os.EX_SOFTWARE)


@click.group(cls=IsolaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="isola")
def cli() -> None:
    """isola runs workloads at every rung of the isolation ladder: emulated, vm, container, metal."""


def main() -> None:
    cli()


def _register() -> None:
    # Imported here, after `cli` exists, so each noun's module stays independent of this one.
    from isola.cli.assets import assets
    from isola.cli.compare import compare
    from isola.cli.container import container
    from isola.cli.daemon import daemon
    from isola.cli.doctor import doctor
    from isola.cli.events import events
    from isola.cli.image import image
    from isola.cli.initramfs import initramfs
    from isola.cli.instance import instance
    from isola.cli.metal import metal
    from isola.cli.network import network
    from isola.cli.schedule import host, schedule
    from isola.cli.tenant import tenant
    from isola.cli.tour import tour
    from isola.cli.vm import vm

    for command in (doctor, tour, assets, initramfs, vm, daemon, tenant, instance, schedule, host, metal):
        cli.add_command(command)
    cli.add_command(container)
    cli.add_command(image)
    cli.add_command(network)
    cli.add_command(network, name="net")
    cli.add_command(compare)
    cli.add_command(events)


_register()
