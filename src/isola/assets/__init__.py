"""Guest assets: kernels, busybox, a riscv64 sysroot and firmware, taken from Debian's archive and verified.

Packages are downloaded, never installed on the host: a private apt state per (suite, architecture) resolves
them against the mirror the host's own apt sources name, each `.deb` is checked against the sha256 in the
archive's signed Packages index, and its contents are unpacked into `$ISOLA_HOME/assets`.
"""
