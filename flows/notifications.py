"""Prefect automations that notify the team when a retrain run fails or its candidate is rejected.

Usage, against the server the retrain deployment runs on (``PREFECT_API_URL``), with a notification
block made beforehand in the UI (Blocks: Slack Webhook, Microsoft Teams, Email, Custom Webhook, ...)::

    python -m flows.notifications --block slack-webhook/ml-team

creates (or replaces) two automations: ``retrain failed`` (a run of the ``retrain`` flow ends Failed,
Crashed or TimedOut) and ``retrain candidate rejected`` (it ends in the state ``Rejected``). Each sends
the run's name, state, message (the failing stage and its last lines, or the gate's reason: counts
and ids only) and a link to the run page through the block.
"""

from __future__ import annotations

import argparse
import sys
from typing import cast
from uuid import UUID

from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

FLOW = "retrain"
BODY = (
    "Flow run {{ flow_run.name }} of {{ flow.name }} ended in state {{ flow_run.state.name }}.\n"
    "{{ flow_run.state.message }}\n"
    "{{ flow_run|ui_url }}"
)
#: automation name -> the states (event ``prefect.flow-run.<state name>``) that trigger it
WATCHED = {
    f"{FLOW} failed": ("Failed", "Crashed", "TimedOut"),
    f"{FLOW} candidate rejected": ("Rejected",),
}


def automations(block_document_id: UUID, flow: str = FLOW) -> list[AutomationCore]:
    """The automations, each sending through the notification block ``block_document_id``."""
    return [
        AutomationCore(
            name=name,
            description=f"Notify when a run of the {flow!r} flow ends in state {' or '.join(states)}",
            trigger=EventTrigger(
                expect={f"prefect.flow-run.{s}" for s in states},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.role": "flow", "prefect.resource.name": flow},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[
                SendNotification(
                    block_document_id=block_document_id,
                    subject=f"EXACT-CT {flow}: {{{{ flow_run.state.name }}}}",
                    body=BODY,
                )
            ],
        )
        for name, states in WATCHED.items()
    ]


def install(block: str, flow: str = FLOW) -> list[UUID]:
    """Create the automations on the current Prefect server, replacing earlier ones of the same names."""
    from prefect.blocks.core import Block
    from prefect.client.orchestration import get_client

    loaded = cast(Block, Block.load(block))
    block_id = loaded._block_document_id
    if block_id is None:
        raise ValueError(f"block {block!r} has no saved document; save it on the server first")
    ids = []
    with get_client(sync_client=True) as client:
        for automation in automations(block_id, flow):
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
            ids.append(client.create_automation(automation))
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flows.notifications", description=__doc__.splitlines()[0])
    parser.add_argument("--block", required=True, help="notification block as <block-type-slug>/<name>")
    parser.add_argument("--flow", default=FLOW, help="flow name (default: retrain)")
    args = parser.parse_args(argv)
    for name, automation_id in zip(WATCHED, install(args.block, args.flow), strict=True):
        print(f"automation {name!r}: {automation_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
