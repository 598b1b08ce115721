import pytest

from isola.engine import ENGINES, Engine, InstanceSpec, Kind, Resources, VmMode, engine_for
from isola.errors import InvalidSpecError, UnsupportedError


def test_a_valid_vm_spec_round_trips_from_json_data():
    spec = InstanceSpec.from_dict(
        {
            "name": "web-1",
            "kind": "vm",
            "mode": "process",
            "resources": {"vcpus": 2, "memory_mib": 512},
            "command": ["/bin/busybox", "echo", "hi"],
            "env": {"A": "1"},
            "networks": ["n1"],
        }
    )
    assert spec.kind is Kind.VM and spec.mode is VmMode.PROCESS
    assert spec.resources == Resources(vcpus=2, memory_mib=512, disk_gib=0)
    assert spec.command == ("/bin/busybox", "echo", "hi")


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"name": "a", "kind": "cloud"}, "kind"),
        ({"name": "a", "kind": "vm"}, "mode"),
        ({"name": "a", "kind": "container", "mode": "kernel"}, "mode"),
        ({"name": "a", "kind": "vm", "mode": "bios"}, "mode"),
        ({"name": "a b", "kind": "metal"}, "name"),
        ({"name": 7, "kind": "metal"}, "name"),
        ({"name": "a", "kind": "metal", "resources": {"vcpus": 0}}, "resources.vcpus"),
        ({"name": "a", "kind": "metal", "resources": {"vcpus": "2"}}, "resources.vcpus"),
        ({"name": "a", "kind": "metal", "resources": {"gpus": 1}}, "resources"),
        ({"name": "a", "kind": "metal", "command": "ls -l"}, "command"),
        ({"name": "a", "kind": "metal", "env": {"A": 1}}, "env"),
        ({"name": "a", "kind": "metal", "colour": "red"}, "colour"),
    ],
)
def test_bad_specs_name_the_offending_field(doc, field):
    with pytest.raises(InvalidSpecError) as info:
        InstanceSpec.from_dict(doc)
    assert info.value.field == field


def test_a_kind_without_an_engine_is_unsupported_not_a_crash():
    missing = [k for k in Kind if k not in ENGINES]
    if not missing:
        pytest.skip("every kind has an engine")
    with pytest.raises(UnsupportedError):
        engine_for(missing[0])


def test_registered_engines_implement_the_protocol():
    assert Kind.VM in ENGINES
    for kind in ENGINES:
        engine = engine_for(kind)
        assert isinstance(engine, Engine) and engine.kind is kind
