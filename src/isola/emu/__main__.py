"""`python -m isola.emu` is `isola-emu`."""

from isola.emu.cli import main

main()
