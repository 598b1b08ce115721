"""`python -m isola.cli` runs the `isola` command (tests use it to run the venv's isola without PATH)."""

from isola.cli.main import main

main()
