"""config.json's `linux.seccomp` turned into a libseccomp filter, with runc's reading of the spec: rules whose
action is the default action are skipped (libseccomp refuses them), system calls libseccomp does not know are
skipped (a profile names calls of every kernel version), and conditions on the same argument become separate
rules (libseccomp allows one comparison per argument in a rule; separate rules OR them, as runc does).
"""

from __future__ import annotations

import errno

from isola.errors import InvalidSpecError, UnsupportedError
from isola.host import seccomp_filter as sf

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, which costs ~2 ms
if TYPE_CHECKING:
    from typing import Any

_ACTIONS = {
    "SCMP_ACT_KILL": sf.ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": sf.ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": sf.ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": sf.ACT_TRAP,
    "SCMP_ACT_LOG": sf.ACT_LOG,
    "SCMP_ACT_ALLOW": sf.ACT_ALLOW,
}
_OPS = {
    "SCMP_CMP_NE": sf.CMP_NE,
    "SCMP_CMP_LT": sf.CMP_LT,
    "SCMP_CMP_LE": sf.CMP_LE,
    "SCMP_CMP_EQ": sf.CMP_EQ,
    "SCMP_CMP_GE": sf.CMP_GE,
    "SCMP_CMP_GT": sf.CMP_GT,
    "SCMP_CMP_MASKED_EQ": sf.CMP_MASKED_EQ,
}
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": sf.ATTR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": sf.ATTR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": sf.ATTR_CTL_SSB,
}


def action(name: str, errno_ret: int | None, field: str) -> int:
    if name == "SCMP_ACT_ERRNO":
        return sf.ACT_ERRNO | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return sf.ACT_TRACE | ((errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if name == "SCMP_ACT_NOTIFY":
        raise UnsupportedError(f"{field}: SCMP_ACT_NOTIFY (a seccomp listener) is not supported by isola-oci")
    if name not in _ACTIONS:
        raise InvalidSpecError(f"unknown seccomp action {name!r}", field=field)
    return _ACTIONS[name]


def build(profile: dict[str, Any]) -> sf.Filter:
    """A filter for the OCI seccomp `profile`, ready to load. The runtime builds it before forking, so that a
    profile libseccomp refuses fails `create` cleanly; the container's init loads it just before execve."""
    try:
        return _build(profile)
    except OSError as exc:
        if exc.errno in (None, 0) and "libseccomp" not in str(exc):
            raise UnsupportedError(f"linux.seccomp needs libseccomp (Debian: libseccomp2): {exc}") from None
        raise InvalidSpecError(f"libseccomp refused the profile: {exc.strerror}", field="linux.seccomp") from None


def _build(profile: dict[str, Any]) -> sf.Filter:
    default = action(profile["defaultAction"], profile.get("defaultErrnoRet"), "linux.seccomp.defaultAction")
    filt = sf.Filter(default)
    filt.set_attribute(sf.ATTR_CTL_NNP, 0)  # no_new_privs is config.json's to decide, not libseccomp's
    for flag in profile.get("flags") or ():
        filt.set_attribute(_FLAGS[flag], 1)
    for arch in profile.get("architectures") or ():
        filt.add_arch(arch.removeprefix("SCMP_ARCH_").lower())
    for i, rule in enumerate(profile.get("syscalls") or ()):
        where = f"linux.seccomp.syscalls[{i}]"
        act = action(rule["action"], rule.get("errnoRet"), f"{where}.action")
        if act == default:
            continue
        conditions = [
            sf.ArgCmp(arg["index"], _OPS[arg["op"]], arg["value"], arg.get("valueTwo", 0))
            for arg in rule.get("args") or ()
        ]
        indices = [c.arg for c in conditions]
        groups = [[c] for c in conditions] if len(set(indices)) < len(indices) else [conditions]
        for name in rule["names"]:
            number = filt.syscall_number(name)
            if number is None:
                continue
            for group in groups:
                filt.add_rule(act, number, group)
    return filt
