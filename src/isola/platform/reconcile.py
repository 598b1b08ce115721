"""Reconcile on start: make the store agree with what the engines really run.

Guests outlive the daemon (each has its own monitor), and the daemon can die between any two steps of a
create or a delete. So at start, for every instance in the store:

- `creating` (the daemon died during a create): if the engine has the guest, the create is finished
  (engine id recorded, state from the engine); if not, the row goes, giving the quota back;
- `deleting` (died during a delete): the delete is finished, with force;
- anything else: the engine is asked for the state; a guest the engine no longer knows is `failed`.

An instance whose kind has no engine in this isola is left as it is and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from isola.errors import IsolaError, NotFoundError
from isola.platform.instances import Instances


@dataclass
class Report:
    """What reconcile changed, by instance id, for the daemon's log and the tests."""

    finished_creates: list[str] = field(default_factory=list)
    undone_creates: list[str] = field(default_factory=list)
    finished_deletes: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)
    """instance id -> 'old -> new' state."""
    problems: dict[str, str] = field(default_factory=dict)


def reconcile(instances: Instances) -> Report:
    report = Report()
    repos = instances.repos
    for instance in repos.instances.list():
        try:
            engine = instances.engines(instance.kind)
            if instance.state == "creating":
                try:
                    status = engine.state(instance.id)
                except NotFoundError:
                    instances.networks.detach(instance.id)
                    repos.instances.delete(instance.id)
                    report.undone_creates.append(instance.id)
                else:
                    repos.instances.update(instance.id, engine_id=instance.id, state=status.state.value)
                    report.finished_creates.append(instance.id)
            elif instance.state == "deleting":
                instances.finish_delete(instance, engine, force=True)
                report.finished_deletes.append(instance.id)
            elif instance.engine_id is not None:
                now = instances.refresh(instance)
                if now.state != instance.state:
                    report.changed[instance.id] = f"{instance.state} -> {now.state}"
        except IsolaError as err:
            report.problems[instance.id] = err.message
    return report
