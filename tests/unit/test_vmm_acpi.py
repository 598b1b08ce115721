"""The ACPI tables isola writes for a microVM, checked by hand against the spec and by ACPICA's own disassembler
(`iasl -d`), which decodes every table and complains about bad checksums, lengths and AML."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isola.devices import acpi_pm
from isola.vmm.acpi import aml
from isola.vmm.acpi import tables as acpi

BASE = 0xE0000


def platform(cpus: int = 2, virtio: int = 2) -> acpi.Platform:
    return acpi.Platform(
        cpus=cpus,
        lapic_addr=0xFEE0_0000,
        ioapic_addr=0xFEC0_0000,
        ioapic_id=cpus,
        sleep_control_port=0x600,
        sleep_status_port=0x601,
        reset_port=0x602,
        reset_value=1,
        virtio=tuple(acpi.VirtioMmioSlot(0xD000_0000 + i * 0x1000, 0x1000, 5 + i) for i in range(virtio)),
        isa=(
            acpi.IsaDevice("COM1", "PNP0501", ((0x3F8, 8),), 4),
            acpi.IsaDevice("PS2K", acpi.KEYBOARD_HID, ((0x60, 1), (0x64, 1)), 1),
        ),
    )


def split(blob: bytes) -> dict[str, bytes]:
    """Follow the pointers from the RSDP at BASE, as a guest does, and return every table by signature."""

    def at(addr: int) -> bytes:
        data = blob[addr - BASE :]
        return data[: struct.unpack_from("<I", data, 4)[0]]

    found = {"RSDP": blob[:36]}
    xsdt = at(struct.unpack_from("<Q", blob, 24)[0])
    found["XSDT"] = xsdt
    for (addr,) in struct.iter_unpack("<Q", xsdt[36:]):
        table = at(addr)
        found[table[:4].decode()] = table
    found["DSDT"] = at(struct.unpack_from("<Q", found["FACP"], 140)[0])
    return found


# -- AML encoding


@pytest.mark.parametrize(
    ("body", "encoded"),
    [
        (0, b"\x01"),
        (0x3E, b"\x3f"),  # one byte up to 63 in all
        (0x3F, b"\x41\x04"),  # 0x41 total: low nibble 1, then 0x04 << 4
        (0xFFD, b"\x4f\xff"),  # 4095 in all: the largest two-byte length
        (0xFFE, b"\x81\x00\x01"),  # 4097 in all: three bytes
    ],
)
def test_pkg_length_counts_itself(body, encoded):
    assert aml.pkg_length(body) == encoded


def test_names_integers_and_ids_use_the_shortest_encodings():
    assert aml.name_string("_HID") == b"_HID"
    assert aml.name_string("_S5") == b"_S5_"
    assert aml.name_string("\\_SB_") == b"\\_SB_"
    assert aml.name_string("\\_SB_.V000") == b"\\\x2e_SB_V000"
    assert aml.name_string("\\A.B.C") == b"\\\x2f\x03A___B___C___"
    assert aml.name_string("^^FOO") == b"^^FOO_"
    assert [aml.integer(v) for v in (0, 1, 2, 0x100, 0x10000, 1 << 32)] == [
        b"\x00",
        b"\x01",
        b"\x0a\x02",
        b"\x0b\x00\x01",
        b"\x0c\x00\x00\x01\x00",
        b"\x0e" + (1 << 32).to_bytes(8, "little"),
    ]
    assert aml.eisa_id("PNP0501") == aml.integer(0x0105D041)  # the value every PC firmware's COM1 carries
    assert aml.string("LNRO0005") == b"\x0dLNRO0005\x00"


@pytest.mark.parametrize("bad", ["1ABC", "ABCDE", "a", ""])
def test_bad_name_segments_are_refused(bad):
    with pytest.raises(ValueError):
        aml.name_seg(bad)


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        aml.integer(-1)
    with pytest.raises(ValueError):
        aml.eisa_id("pnp0501")
    with pytest.raises(ValueError):
        aml.string("a\0b")
    with pytest.raises(ValueError):
        aml.irq_no_flags(16)


def test_resource_template_descriptors_follow_the_spec_layout():
    assert aml.memory32_fixed(0xD000_0000, 0x1000) == bytes.fromhex("860900 01 000000d0 00100000".replace(" ", ""))
    assert aml.extended_irq(5, edge=False) == bytes.fromhex("890600 01 01 05000000".replace(" ", ""))
    assert aml.extended_irq(5, edge=True, active_low=True, shared=True)[3] == 0b1111
    assert aml.resource_template([]) == b"\x11\x05\x0a\x02\x79\x00"


# -- tables


@given(cpus=st.integers(1, 64), virtio=st.integers(0, 18))
def test_every_table_sums_to_zero_and_points_where_it_should(cpus, virtio):
    blob = acpi.build(platform(cpus, virtio), BASE)
    found = split(blob)
    assert found["RSDP"][:8] == b"RSD PTR " and sum(found["RSDP"][:20]) % 256 == 0 and sum(found["RSDP"]) % 256 == 0
    assert set(found) == {"RSDP", "XSDT", "FACP", "APIC", "DSDT"}
    for name, table in found.items():
        assert sum(table) % 256 == 0, name
    assert found["DSDT"].count(b"LNRO0005") == virtio
    madt = found["APIC"]
    assert madt[44::8][:cpus] == bytes([acpi.MADT_LAPIC] * cpus)  # one local APIC entry per vCPU, 8 bytes each
    assert len(madt) == 44 + 8 * cpus + 12 + 6


def test_the_fadt_describes_a_hardware_reduced_platform_with_its_power_ports():
    fadt = split(acpi.build(platform(), BASE))["FACP"]
    assert len(fadt) == acpi.FADT_LENGTH and fadt[8] == acpi.FADT_REVISION
    (flags,) = struct.unpack_from("<I", fadt, 112)
    assert flags & acpi.FADT_HW_REDUCED_ACPI and flags & acpi.FADT_RESET_REG_SUP
    (boot_arch,) = struct.unpack_from("<H", fadt, 109)
    assert boot_arch & acpi.IAPC_8042
    assert struct.unpack_from("<BBBBQ", fadt, 116) == (1, 8, 0, 1, 0x602) and fadt[128] == 1  # reset register
    assert struct.unpack_from("<BBBBQ", fadt, 244) == (1, 8, 0, 1, 0x600)  # sleep control
    assert struct.unpack_from("<BBBBQ", fadt, 256) == (1, 8, 0, 1, 0x601)  # sleep status


@pytest.fixture(scope="module")
def disassembled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    iasl = shutil.which("iasl")
    if iasl is None:
        pytest.skip("iasl (Debian's acpica-tools) is not installed; `make setup` installs it")
    work: Path = tmp_path_factory.mktemp("acpi")
    texts = {}
    for name, table in split(acpi.build(platform(cpus=3, virtio=2), BASE)).items():
        if name == "RSDP":
            continue
        (work / f"{name.lower()}.dat").write_bytes(table)
        done = subprocess.run([iasl, "-d", f"{name.lower()}.dat"], cwd=work, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        texts[name] = (work / f"{name.lower()}.dsl").read_text()
    return texts


def test_acpica_finds_nothing_wrong(disassembled):
    for name, text in disassembled.items():
        for complaint in ("Incorrect", "Invalid", "Error", "Warning"):
            assert complaint not in text, f"{name}: {complaint}"


def test_acpica_reads_the_virtio_devices_and_soft_off_from_the_dsdt(disassembled):
    dsdt = disassembled["DSDT"]
    assert dsdt.count('Name (_HID, "LNRO0005")') == 2
    assert "0xD0001000," in dsdt and "Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, )" in dsdt
    assert "0x00000006," in dsdt
    assert "Name (\\_S5, Package (0x04)" in dsdt


def test_acpica_reads_the_isa_devices_with_their_ports_and_interrupts(disassembled):
    dsdt = disassembled["DSDT"]
    assert 'EisaId ("PNP0501") /* 16550A-compatible COM Serial Port */' in dsdt
    assert 'EisaId ("PNP0303") /* IBM Enhanced Keyboard' in dsdt
    assert "IO (Decode16,\n                    0x03F8,             // Range Minimum" in dsdt
    assert "IRQNoFlags ()\n                    {4}" in dsdt and "IRQNoFlags ()\n                    {1}" in dsdt


def test_the_fadt_advertises_an_8042_only_when_there_is_a_keyboard():
    bare = acpi.Platform(**{**platform().__dict__, "isa": ()})
    (boot_arch,) = struct.unpack_from("<H", split(acpi.build(bare, BASE))["FACP"], 109)
    assert not boot_arch & acpi.IAPC_8042


def test_acpica_reads_the_fadt_and_madt(disassembled):
    assert "Hardware Reduced (V5) : 1" in disassembled["FACP"]
    assert "8042 Present on ports 60/64 (V2) : 1" in disassembled["FACP"]
    assert disassembled["APIC"].count("[Processor Local APIC]") == 3
    assert "[I/O APIC]" in disassembled["APIC"] and "[Local APIC NMI]" in disassembled["APIC"]


# -- the power management ports


def test_soft_off_and_reset_reach_the_vmm_and_nothing_else_does():
    events: list[str] = []
    pm = acpi_pm.AcpiPowerManagement(
        soft_off_type=acpi.S5_SLEEP_TYPE,
        reset_value=1,
        on_poweroff=lambda: events.append("off"),
        on_reset=lambda: events.append("reset"),
    )
    pm.write(acpi_pm.SLEEP_CONTROL, 1, 3 << 2 | acpi_pm.SLP_EN)  # S3: not supported, ignored
    pm.write(acpi_pm.SLEEP_CONTROL, 1, 5 << 2)  # SLP_TYP without SLP_EN does nothing
    pm.write(acpi_pm.RESET, 1, 2)  # not the reset value
    assert events == []
    assert pm.read(acpi_pm.SLEEP_STATUS, 1) == acpi_pm.WAK_STS and pm.read(acpi_pm.SLEEP_CONTROL, 1) == 0
    pm.write(acpi_pm.SLEEP_CONTROL, 1, 5 << 2 | acpi_pm.SLP_EN)  # what Linux writes for S5
    pm.write(acpi_pm.RESET, 1, 1)
    assert events == ["off", "reset"]
