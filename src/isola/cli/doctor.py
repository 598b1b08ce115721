"""`isola doctor`: the host's abilities, and a verdict per kind of isolation."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from isola.cli.output import emit, json_option, stdout, table
from isola.doctor import facts as host_facts
from isola.doctor.verdicts import PROVIDER_MEANING, Status, judge

STATUS_STYLE = {Status.USABLE: "green", Status.LIMITED: "yellow", Status.UNUSABLE: "red"}


def _yes(ok: bool, detail: str = "") -> str:
    mark = "[green]yes[/]" if ok else "[red]no[/]"
    return f"{mark} {detail}".rstrip()


def report() -> dict[str, Any]:
    """Facts and verdicts as one JSON-able document."""
    f = host_facts.gather()
    doc = asdict(f)
    doc["kvm"]["meaning"] = PROVIDER_MEANING.get(f.kvm.provider or "", None)
    doc["cgroups"]["mode"] = f.cgroups.mode.value
    doc["kinds"] = [asdict(v) | {"status": v.status.value} for v in judge(f)]
    return doc


def render(doc: dict[str, Any]) -> None:
    kvm, cg = doc["kvm"], doc["cgroups"]
    ns = doc["namespaces"]
    host_rows = [
        [
            "host",
            f"{doc['hostname']}: Linux {doc['kernel']} {doc['arch']}, {'root' if doc['root'] else 'not root'}",
        ],
        [
            "cpu",
            f"{doc['cpu']['model']} ({doc['cpu']['vendor']}), {doc['cpu']['count']} CPUs; flags: "
            + " ".join(k if v else f"[dim]-{k}[/]" for k, v in doc["cpu"]["flags"].items()),
        ],
        ["memory", f"{doc['memory_mib']} MiB, {doc['memory_available_mib']} MiB available"],
        ["disk", f"{doc['disk_free_gib']} GiB free of {doc['disk_total_gib']} GiB at {doc['disk_path']}"],
        [
            "kvm",
            _yes(
                kvm["usable"],
                f"API {kvm['api_version']}, provider {kvm['provider']}" if kvm["present"] else (kvm["problem"] or ""),
            ),
        ],
    ]
    if kvm["problem"]:
        host_rows.append(["", f"[red]{kvm['problem']}[/]"])
    if kvm["meaning"]:
        host_rows.append(["", f"[dim]{kvm['meaning']}[/]"])
    v1 = ", ".join(cg["v1"]) or "-"
    v2 = f"{cg['v2_mount']} ({', '.join(cg['v2_controllers']) or 'no controllers'})" if cg["v2_mount"] else "-"
    host_rows += [
        ["cgroups", f"[bold]{cg['mode']}[/]: v1 {v1}; v2 {v2}"],
        ["namespaces", " ".join(n if v["ok"] else f"[red]-{n}[/]" for n, v in ns.items())],
        ["overlayfs", _yes(doc["overlayfs"]["ok"], doc["overlayfs"]["detail"])],
        ["/dev/net/tun", _yes(doc["tun"]["ok"], doc["tun"]["detail"])],
        ["libseccomp", _yes(doc["seccomp"]["ok"], doc["seccomp"]["detail"])],
        ["tools", " ".join(t if p else f"[dim]-{t}[/]" for t, p in doc["tools"].items())],
        [
            "assets",
            "; ".join(f"{arch}: {', '.join(pkgs)}" for arch, pkgs in doc["assets"].items())
            or "[yellow]none cached[/] (isola assets fetch --all)",
        ],
    ]
    stdout.print(table("Host", ["", ""], host_rows, header=False))
    stdout.print()
    kind_rows = []
    for k in doc["kinds"]:
        style = STATUS_STYLE[Status(k["status"])]
        name = k["kind"] + (f" ({k['mode']})" if k["mode"] else "")
        kind_rows.append([name, f"[{style}]{k['status']}[/]", k["reason"]])
    stdout.print(table("Kinds of isolation on this host", ["kind", "status", "why"], kind_rows))


@click.command()
@json_option
def doctor(as_json: bool) -> None:
    """What this host can do for each kind of isolation, and why not where it can't."""
    emit(report(), render, as_json)
