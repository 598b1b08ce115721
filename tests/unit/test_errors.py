import os

import pytest

from isola import errors


@pytest.mark.parametrize(
    ("err", "code", "status"),
    [
        (errors.UsageError("x"), os.EX_USAGE, 400),
        (errors.InvalidSpecError("bad", field="a.b"), os.EX_DATAERR, 422),
        (errors.NotFoundError("x"), os.EX_NOINPUT, 404),
        (errors.ConflictError("x"), os.EX_CANTCREAT, 409),
        (errors.MirrorUnreachableError("x"), os.EX_TEMPFAIL, 503),
        (errors.ChecksumError("x"), os.EX_DATAERR, 502),
        (errors.UnsupportedError("x"), os.EX_UNAVAILABLE, 501),
        (errors.IsolaError("x"), 1, 500),
    ],
)
def test_each_error_has_its_exit_code_and_http_status(err, code, status):
    assert errors.exit_code(err) == code
    assert errors.http_status(err) == status


def test_a_subclass_without_its_own_entry_inherits_its_parents():
    class Special(errors.NotFoundError):
        pass

    assert errors.exit_code(Special("x")) == os.EX_NOINPUT
    assert errors.http_status(Special("x")) == 404


def test_invalid_spec_names_the_field():
    err = errors.InvalidSpecError("must be positive", field="resources.vcpus")
    assert str(err) == "resources.vcpus: must be positive"
    assert err.field == "resources.vcpus"
