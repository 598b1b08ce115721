"""isola-emu's hand-written option parser: qemu-user's shape (options, PROGRAM, then the guest's own words)."""

from __future__ import annotations

import pytest

from isola.emu.cli import Options, UsageError, main, parse


def test_options_then_program_then_the_guests_arguments() -> None:
    opts = parse(["-L", "/root", "-E", "A=1", "-EB=2", "-U", "C", "-0", "sh", "--stats", "-R", "512M",
                  "prog", "--stats", "-L", "x"])  # fmt: skip
    assert opts == Options(
        program="prog",
        args=["--stats", "-L", "x"],  # after PROGRAM everything is the guest's
        sysroot="/root",
        set_env=("A=1", "B=2"),
        unset_env=("C",),
        argv0="sh",
        memory=512 << 20,
        stats=True,
    )


def test_attached_values_and_the_end_of_options() -> None:
    assert parse(["--memory=2G", "--strace", "--", "-prog"]) == Options("-prog", [], memory=2 << 30, strace=True)
    assert parse(["-R4096", "p"]).memory == 4096


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "required"),
        (["-L"], "-L expects a value"),
        (["-x", "p"], "unrecognized option: -x"),
        (["-R", "lots", "p"], "not a size"),
    ],
)
def test_usage_errors_exit_2_with_the_usage(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match=words):
        parse(argv)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: isola-emu") and words in err


@pytest.mark.parametrize("flag", ["-h", "--help", "--version"])
def test_help_and_version_exit_0(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse([flag, "ignored"])
    assert exited.value.code == 0
    assert "isola-emu" in capsys.readouterr().out
