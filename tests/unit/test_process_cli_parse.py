"""`isola-vmm run`'s option parser: what argparse accepted before it, without importing argparse."""

from __future__ import annotations

import pytest

from isola.errors import UsageError
from isola.vmm.process.cli import Arguments, parse


def test_options_then_the_program_and_everything_after_it() -> None:
    got = parse(["--process", "--root", "/r", "--memory=64", "-e", "A=1", "--env=B=2", "-eC=3", "--stats",
                 "--no-fastpath", "--max-processes", "8", "/bin/sh", "-c", "--root x; exit 3"])  # fmt: skip
    assert got == Arguments(
        root="/r", memory=64, env=["A=1", "B=2", "C=3"], strace=False, stats=True, no_fastpath=True,
        max_processes=8, program="/bin/sh", args=["-c", "--root x; exit 3"],
    )  # fmt: skip


def test_defaults_and_the_double_dash() -> None:
    got = parse(["--process", "--", "--odd-name", "--strace"])
    assert (got.root, got.memory, got.env, got.max_processes) == (None, 1024, [], 256)
    assert (got.program, got.args, got.strace) == ("--odd-name", ["--strace"], False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["/bin/true"], "--process is required"),
        (["--process"], "PROGRAM is required"),
        (["--process", "--memory"], "--memory expects a value"),
        (["--process", "--memory", "lots", "/p"], "'lots' is not a whole number"),
        (["--process", "--bogus", "/p"], "unrecognized option --bogus"),
        (["--process", "--strace=1", "/p"], "unrecognized option --strace=1"),
    ],
)
def test_mistakes_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(argv)
