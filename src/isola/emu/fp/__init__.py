"""IEEE-754 binary32/binary64 with RISC-V F/D semantics; import the public API from isola.emu.softfloat."""
