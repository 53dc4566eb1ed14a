"""The failure and rejection notifications are Prefect automations on the retrain flow's run states."""

from __future__ import annotations

from uuid import uuid4


def test_automations_watch_failed_and_rejected_runs_of_the_retrain_flow():
    from flows.notifications import automations

    block = uuid4()
    failed, rejected = automations(block)
    assert failed.trigger.expect == {
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.TimedOut",
    }
    assert rejected.trigger.expect == {
        "prefect.flow-run.Rejected"
    }  # the flow's state for a rejected candidate
    for automation in (failed, rejected):
        assert automation.trigger.match_related.model_dump() == {
            "prefect.resource.role": "flow",
            "prefect.resource.name": "retrain",
        }
        (action,) = automation.actions
        assert action.block_document_id == block and "flow_run|ui_url" in action.body


def test_install_creates_them_on_the_server_once(prefect_harness):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from flows.notifications import WATCHED, install

    CustomWebhookNotificationBlock(
        name="t", url="http://127.0.0.1:9/hook", json_data={"text": "{{body}}"}
    ).save("exact-test", overwrite=True)
    install("custom-webhook/exact-test")
    install("custom-webhook/exact-test")  # again: replaced, not duplicated
    with get_client(sync_client=True) as client:
        for name in WATCHED:
            assert len(client.read_automations_by_name(name)) == 1
