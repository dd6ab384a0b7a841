"""Notifications end to end: the REST API's channels, the detectors writing the outbox, the
dispatcher delivering to a real HTTP receiver on 127.0.0.1 that checks the HMAC signature
with its own code, and SNS under moto (read back through an SQS subscription).

The control plane's clock is injected (``api.clock``): retries are driven by advancing it,
never by sleeping.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.notifiers import ChannelRouter
from shared.domain.jobs import Job, JobKind, JobState
from shared.domain.notifications import Notification, NotificationChannel
from shared.domain.points import MachineStatus, PlanStatus
from shared.errors import NotFoundError
from shared.services import notify
from shared.services.scheduler import tick
from tests.support.control import InProcessApi
from tests.support.webhook_receiver import Receiver, ReceiverServer

pytestmark = pytest.mark.ops


@pytest.fixture
def api(tmp_path: Path) -> InProcessApi:
    api = InProcessApi(tmp_path)
    api.ctl.notifier = ChannelRouter(timeout=2.0)
    api.ctl.console_url = "https://lifeboat.example/console/"
    return api


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> InProcessApi:
    """For tests that store nothing (logins hash passwords: a fresh control plane costs seconds)."""
    return InProcessApi(tmp_path_factory.mktemp("notify"))


@pytest.fixture
def hook() -> Iterator[Receiver]:
    server = ReceiverServer()
    yield server.receiver
    server.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nothing listens there any more: connection refused


def seed_plan(api: InProcessApi, plan_id: str = "web", *, rpo: int = 15, site: str = "dr") -> None:
    if api.call("GET", f"/sites/{site}", as_="viewer").status == 404:
        body = {"id": site, "name": f"site {site}", "site_kind": "local", "repository_url": "/tmp/never-used"}
        assert api.call("POST", "/sites", body, as_="admin").status == 201
    plan = {"id": plan_id, "name": plan_id, "source_site_id": site, "target_site_id": site, "rpo_minutes": rpo,
            "machines": [{"machine_id": f"{plan_id}1", "disks": [{"disk_id": f"{plan_id}1-d0", "source": "/tmp/x.img"}]}]}  # fmt: skip
    assert api.call("POST", "/plans", plan, as_="admin").status == 201
    assert api.call("POST", f"/plans/{plan_id}/protect", as_="admin").status == 200


def webhook(api: InProcessApi, url: str, events: list[str], **scope: Any) -> tuple[str, str]:
    reply = api.call("POST", "/notification-channels", {"name": "ops", "channel_kind": "webhook", "url": url,
                                                        "events": events, **scope}, as_="operator")  # fmt: skip
    assert reply.status == 201, reply.body
    return reply.body["id"], reply.body["secret"]


def fail_a_job(api: InProcessApi, plan_id: str = "web", node: str = "1") -> str:
    job_id = api.call("POST", f"/plans/{plan_id}/replicate-now", as_="operator").body["id"]
    api.call("POST", "/nodes/register", {"name": f"n{node}", "site_id": "dr"}, as_=f"node{node}")
    assert api.call("POST", f"/nodes/node-{node}/claim", as_=f"node{node}").body["id"] == job_id
    done = api.call("POST", f"/jobs/{job_id}/complete", {"state": "failed", "error": "disk read error"},
                    as_=f"node{node}")  # fmt: skip
    assert done.status == 200 and done.body["state"] == "failed"
    return job_id


def outbox(api: InProcessApi, **where: str) -> list[dict[str, Any]]:
    reply = api.call("GET", "/notifications" + ("?" + "&".join(f"{k}={v}" for k, v in where.items()) if where else ""),
                     as_="viewer")  # fmt: skip
    assert reply.status == 200
    return reply.body["items"]


# --- delivery ---------------------------------------------------------------------------------
def test_a_failed_job_sends_one_signed_webhook(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api)
    channel_id, hook.secret = webhook(api, hook.url, ["job_failed"])
    job_id = fail_a_job(api)
    assert hook.received == []  # the completion only wrote the outbox
    report = tick(api.ctl)
    assert len(report.notifications.delivered) == 1
    tick(api.ctl)  # nothing twice
    assert len(hook.received) == 1
    got = hook.received[0]
    assert got.signature_ok
    body = got.json
    assert body["text"].startswith("[Lifeboat] WARNING job_failed:") and "disk read error" in body["text"]
    assert body["lifeboat"]["event"] == "job_failed" and body["lifeboat"]["job_id"] == job_id
    assert body["lifeboat"]["plan_id"] == "web" and body["lifeboat"]["severity"] == "warning"
    assert body["lifeboat"]["console_url"] == f"https://lifeboat.example/console/#/jobs/{job_id}"
    assert got.headers["x-lifeboat-event"] == "job_failed"
    [n] = outbox(api, state="delivered")
    assert n["channel_id"] == channel_id and n["attempts"] == 1 and n["last_status"] == 200
    assert got.headers["x-lifeboat-delivery"] == n["id"]
    api.clock.advance(days=29)
    assert tick(api.ctl).notifications.pruned == 0
    api.clock.advance(days=2)  # delivered records are kept 30 days
    assert tick(api.ctl).notifications.pruned == 1
    assert api.ctl.store.query(Notification).items == []


def test_two_5xx_then_200_is_delivered_on_the_third_attempt_after_backoff(
    api: InProcessApi, hook: Receiver
) -> None:
    seed_plan(api)
    _, hook.secret = webhook(api, hook.url, ["job_failed"])
    hook.script = [500, 503]
    fail_a_job(api)
    first = tick(api.ctl).notifications
    assert len(first.retrying) == 1 and len(hook.received) == 1
    [n] = outbox(api, state="pending")
    assert n["attempts"] == 1 and n["last_status"] == 500
    wait = notify.backoff(1, None)  # bounds: jittered between half and all of BASE_DELAY
    assert notify.BASE_DELAY / 2 <= wait <= notify.BASE_DELAY
    tick(api.ctl)
    assert len(hook.received) == 1  # not due yet: the clock has not moved
    api.clock.advance(seconds=notify.BASE_DELAY.total_seconds())
    tick(api.ctl)
    assert len(hook.received) == 2
    [n] = outbox(api, state="pending")
    assert n["attempts"] == 2 and n["last_status"] == 503
    api.clock.advance(seconds=notify.BASE_DELAY.total_seconds())  # the second wait is 30-60 s
    tick(api.ctl)
    assert len(hook.received) == 2
    api.clock.advance(seconds=notify.BASE_DELAY.total_seconds())
    tick(api.ctl)
    assert len(hook.received) == 3 and all(r.signature_ok for r in hook.received)
    assert (
        len({r.headers["x-lifeboat-delivery"] for r in hook.received}) == 1
    )  # one notification, three attempts
    [n] = outbox(api, state="delivered")
    assert n["attempts"] == 3


def test_retry_after_is_honoured(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api)
    _, hook.secret = webhook(api, hook.url, ["job_failed"])
    hook.script = [(429, {"Retry-After": "600"})]
    fail_a_job(api)
    tick(api.ctl)
    n = api.ctl.store.query(Notification, limit=1).items[0]
    assert n.state == "pending" and n.next_attempt_at - api.clock.now >= timedelta(seconds=600)


def test_a_dead_endpoint_never_fails_the_job_and_ends_dead(api: InProcessApi) -> None:
    seed_plan(api)
    webhook(api, closed_port_url(), ["job_failed"])
    job_id = fail_a_job(api)  # the completion answered 200: the job is in its own (failed) state
    assert api.call("GET", f"/jobs/{job_id}", as_="viewer").body["state"] == "failed"
    reports = []
    for _ in range(3):
        reports.append(notify.dispatch(api.ctl, max_attempts=3))
        api.clock.advance(hours=2)  # past any backoff
    assert [len(r.retrying) for r in reports] == [1, 1, 0] and len(reports[-1].dead) == 1
    [n] = api.ctl.store.query(Notification, limit=10).items
    assert n.state == "dead" and n.attempts == 3 and n.last_status is None
    assert "refused" in n.last_error.lower(), n.last_error
    assert api.ctl.store.get(Job, job_id).state is JobState.FAILED
    # and the replication job the scheduler wants next is still created
    api.clock.advance(minutes=30)
    assert tick(api.ctl).created


def test_a_dead_endpoint_delays_no_other_channel(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api)
    dead_id, _ = webhook(api, closed_port_url(), ["job_failed"])
    _, hook.secret = webhook(api, hook.url, ["job_failed"])
    fail_a_job(api)
    fail_a_job(api, node="2")
    report = notify.dispatch(api.ctl)
    assert len(report.delivered) == 2 and len(hook.received) == 2
    assert len(report.retrying) == 1 and report.deferred == 1  # one attempt at the dead channel per tick
    tried = [n for n in api.ctl.store.query(Notification, where={"channel_id": dead_id}).items if n.attempts]
    assert len(tried) == 1


def test_a_4xx_is_not_retried(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api)
    _, hook.secret = webhook(api, hook.url, ["job_failed"])
    hook.script = [400]
    fail_a_job(api)
    assert len(tick(api.ctl).notifications.dead) == 1
    [n] = outbox(api, state="dead")
    assert n["last_status"] == 400 and n["attempts"] == 1 and "HTTP 400" in n["last_error"]
    api.clock.advance(hours=5)
    tick(api.ctl)
    assert len(hook.received) == 1


def test_a_failure_to_write_the_outbox_never_fails_the_job(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api)
    webhook(api, hook.url, ["job_failed"])
    store_create = api.ctl.store.create

    def refuse_notifications(record: Any) -> Any:
        if isinstance(record, Notification):
            raise OSError("disk full")
        return store_create(record)

    api.ctl.store.create = refuse_notifications  # type: ignore[method-assign]
    job_id = fail_a_job(api)
    assert api.call("GET", f"/jobs/{job_id}", as_="viewer").body["state"] == "failed"
    assert outbox(api) == []


def test_scope_a_channel_for_plan_a_hears_nothing_of_plan_b(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api, "web")
    seed_plan(api, "db")
    webhook(api, hook.url, ["job_failed"], plan_ids=["web"])
    other_site = webhook(api, hook.url, ["job_failed"], site_ids=["elsewhere"])[0]
    this_site = webhook(api, hook.url, ["job_failed"], site_ids=["dr"])[0]
    fail_a_job(api, "db")
    assert {n["channel_id"] for n in outbox(api)} == {this_site}
    fail_a_job(api, "web", node="2")
    by_plan = [n for n in outbox(api) if n["payload"]["plan_id"] == "web"]
    assert len(by_plan) == 2 and other_site not in {n["channel_id"] for n in by_plan}


def test_rpo_breach_from_a_scheduler_tick_on_stale_points(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api, rpo=15)
    _, hook.secret = webhook(api, hook.url, ["rpo_breach", "rpo_resolved"])
    stale = api.clock.now - timedelta(hours=2)
    api.ctl.store.create(PlanStatus(id="web", machines={"web1": MachineStatus(last_point_at=stale)}))
    first = tick(api.ctl)
    assert first.alerts_opened == ["rpo-web-web1"] and len(first.notifications.delivered) == 1
    tick(api.ctl)  # still breached: no second notification
    assert len(hook.received) == 1 and hook.received[0].signature_ok
    sent = hook.received[0].json["lifeboat"]
    assert sent["event"] == "rpo_breach" and sent["severity"] == "critical" and sent["plan_id"] == "web"
    assert sent["details"]["machine_id"] == "web1" and sent["site_ids"] == ["dr"]
    status = api.ctl.store.get(PlanStatus, "web")
    api.ctl.store.update(
        status.model_copy(update={"machines": {"web1": MachineStatus(last_point_at=api.clock.now)}})
    )
    assert tick(api.ctl).alerts_resolved == ["rpo-web-web1"]
    assert [r.json["lifeboat"]["event"] for r in hook.received] == ["rpo_breach", "rpo_resolved"]


def test_node_lost(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api)
    _, hook.secret = webhook(api, hook.url, ["node_lost"])
    job_id = api.call("POST", "/plans/web/replicate-now", as_="operator").body["id"]
    api.call("POST", "/nodes/register", {"name": "n1", "site_id": "dr"}, as_="node1")
    api.call("POST", "/nodes/node-1/claim", as_="node1")
    api.clock.advance(minutes=16)  # 3 leases of 5 minutes without a report
    report = tick(api.ctl)
    assert report.lost_jobs == [job_id]
    assert len(hook.received) == 1
    sent = hook.received[0].json["lifeboat"]
    assert sent["event"] == "node_lost" and sent["node_id"] == "node-1" and sent["job_id"] == job_id
    assert sent["site_ids"] == ["dr"]


def test_a_failed_test_recovery(api: InProcessApi, hook: Receiver) -> None:
    seed_plan(api)
    _, hook.secret = webhook(api, hook.url, ["test_recovery_failed"])
    now = api.clock.now
    api.call("POST", "/nodes/register", {"name": "n1", "site_id": "dr"}, as_="node1")
    api.ctl.store.create(Job(id="job-test1", job_kind=JobKind.TEST_RECOVERY, plan_id="web", state=JobState.RUNNING,
                             node_id="node-1", started_at=now, lease_until=now + timedelta(minutes=5), attempts=1))  # fmt: skip
    report = {"id": "job-test1", "plan_id": "web", "job_id": "job-test1", "mode": "test", "platform": "qemu",
              "state": "partial", "started_at": now.isoformat(), "finished_at": now.isoformat()}  # fmt: skip
    done = api.call("POST", "/jobs/job-test1/complete", {"state": "failed", "error": "web1 did not boot",
                                                          "result": {"report": report}}, as_="node1")  # fmt: skip
    assert done.status == 200, done.body
    tick(api.ctl)
    [got] = hook.received
    sent = got.json["lifeboat"]
    assert sent["event"] == "test_recovery_failed" and sent["severity"] == "critical"
    assert sent["details"]["report_state"] == "partial" and "partial" in got.json["text"]


# --- SNS ----------------------------------------------------------------------------------------
def test_sns_publish_read_back_through_sqs(api: InProcessApi, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    from shared.adapters.aws.sns_notifier import SnsSender

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="lifeboat-alerts")["TopicArn"]
        queue_url = sqs.create_queue(QueueName="ops")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        api.ctl.notifier = ChannelRouter(sns=SnsSender(client=sns))
        seed_plan(api)
        created = api.call("POST", "/notification-channels", {"name": "sns", "channel_kind": "sns", "topic_arn": topic,
                                                               "events": ["job_failed"]}, as_="operator")  # fmt: skip
        assert created.status == 201 and "secret" not in created.body
        job_id = fail_a_job(api)
        assert len(tick(api.ctl).notifications.delivered) == 1
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    [envelope] = [json.loads(m["Body"]) for m in messages]
    assert envelope["Subject"] == "Lifeboat warning: job_failed"
    assert envelope["MessageAttributes"]["event"]["Value"] == "job_failed"
    assert envelope["MessageAttributes"]["severity"]["Value"] == "warning"
    message = json.loads(envelope["Message"])
    assert message["lifeboat"]["job_id"] == job_id and message["text"].startswith("[Lifeboat] WARNING")


def test_sns_unknown_topic_is_rejected_not_retried(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto import mock_aws

    from shared.adapters.aws.sns_notifier import SnsSender

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        api.ctl.notifier = ChannelRouter(sns=SnsSender(client=boto3.client("sns", region_name="us-east-1")))
        topic = "arn:aws:sns:us-east-1:123456789012:never-created"
        created = api.call("POST", "/notification-channels", {"name": "sns", "channel_kind": "sns", "topic_arn": topic,
                                                               "events": ["job_failed"]}, as_="operator")  # fmt: skip
        tested = api.call("POST", f"/notification-channels/{created.body['id']}/test", as_="operator")
    assert tested.status == 200 and tested.body["state"] == "dead" and "NotFound" in tested.body["last_error"]


# --- the API --------------------------------------------------------------------------------------
def test_channel_crud_secret_shown_once(api: InProcessApi, hook: Receiver) -> None:
    assert api.call("POST", "/notification-channels", {"name": "x", "channel_kind": "webhook", "url": hook.url,
                                                       "events": ["job_failed"]}, as_="viewer").status == 403  # fmt: skip
    channel_id, secret = webhook(api, hook.url, ["job_failed", "node_lost"])
    assert secret.startswith("lbwhsec_") and len(secret) > 40
    record = api.ctl.store.get(NotificationChannel, channel_id)
    assert (
        record.secret_ref and api.ctl.secrets is not None and api.ctl.secrets.get(record.secret_ref) == secret
    )
    listed = api.call("GET", "/notification-channels", as_="viewer")
    one = api.call("GET", f"/notification-channels/{channel_id}", as_="viewer")
    for text in (json.dumps(listed.body), json.dumps(one.body)):
        assert secret not in text and "secret_ref" not in text and '"secret"' not in text
    assert one.body["events"] == ["job_failed", "node_lost"] and one.body["enabled"] is True

    changed = api.call("PUT", f"/notification-channels/{channel_id}", {
        "revision": one.body["revision"], "name": "ops-2", "url": hook.url, "events": ["rpo_breach"], "enabled": False,
    }, as_="operator")  # fmt: skip
    assert changed.status == 200 and changed.body["name"] == "ops-2" and changed.body["enabled"] is False
    stale = api.call("PUT", f"/notification-channels/{channel_id}", {
        "revision": one.body["revision"], "name": "ops-3", "url": hook.url, "events": ["rpo_breach"]}, as_="operator")  # fmt: skip
    assert stale.status == 409

    hook.secret = secret
    tested = api.call("POST", f"/notification-channels/{channel_id}/test", as_="operator")
    assert tested.status == 200 and tested.body["state"] == "delivered" and hook.received[-1].signature_ok
    assert hook.received[-1].json["lifeboat"]["event"] == "test"

    rotated = api.call("POST", f"/notification-channels/{channel_id}/rotate-secret", as_="operator")
    assert rotated.status == 200 and rotated.body["secret"] != secret
    with pytest.raises(NotFoundError):
        api.ctl.secrets.get(record.secret_ref)  # the old secret is gone from the vault
    api.call("POST", f"/notification-channels/{channel_id}/test", as_="operator")
    assert not hook.received[-1].signature_ok  # signed with the new secret now
    hook.secret = rotated.body["secret"]
    api.call("POST", f"/notification-channels/{channel_id}/test", as_="operator")
    assert hook.received[-1].signature_ok

    new_ref = api.ctl.store.get(NotificationChannel, channel_id).secret_ref
    assert api.call("DELETE", f"/notification-channels/{channel_id}", as_="operator").status == 204
    assert api.call("GET", f"/notification-channels/{channel_id}", as_="viewer").status == 404
    with pytest.raises(NotFoundError):
        api.ctl.secrets.get(new_ref or "")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"channel_kind": "webhook", "url": "http://hooks.example.com/x", "events": ["job_failed"]}, "loopback"),
        ({"channel_kind": "webhook", "url": "ftp://hooks.example.com/x", "events": ["job_failed"]}, "https"),
        ({"channel_kind": "webhook", "url": "https://u:p@hooks.example.com/x", "events": ["job_failed"]}, "credentials"),
        ({"channel_kind": "webhook", "url": "https://hooks.example.com/x", "events": ["disk_full"]}, "events"),
        ({"channel_kind": "webhook", "url": "https://hooks.example.com/x", "events": ["test"]}, "subscribable"),
        ({"channel_kind": "webhook", "url": "https://hooks.example.com/x", "events": []}, "events"),
        ({"channel_kind": "webhook", "events": ["job_failed"]}, "needs url"),
        ({"channel_kind": "sns", "url": "https://hooks.example.com/x", "events": ["job_failed"]}, "needs topic_arn"),
        ({"channel_kind": "sns", "topic_arn": "arn:aws:s3:::bucket", "events": ["job_failed"]}, "topic ARN"),
        ({"channel_kind": "email", "url": "https://hooks.example.com/x", "events": ["job_failed"]}, "channel_kind"),
        ({"channel_kind": "webhook", "url": "https://hooks.example.com/x", "events": ["job_failed"], "secret_ref": "x"}, "secret_ref"),
    ],
)  # fmt: skip
def test_malformed_channels_are_422_and_store_nothing(
    shared_api: InProcessApi, body: dict[str, Any], where: str
) -> None:
    api = shared_api
    api.configure()
    reply = api.call("POST", "/notification-channels", {"name": "bad", **body}, as_="operator")
    assert reply.status == 422, reply.body
    assert reply.body["error"]["code"] == "Validation"
    assert where in json.dumps(reply.body["error"]), reply.body
    assert api.call("GET", "/notification-channels", as_="viewer").body["items"] == []


def test_https_and_loopback_urls_are_accepted(api: InProcessApi) -> None:
    for url in ("https://hooks.slack.com/services/T0/B0/x", "http://127.0.0.1:9/x", "http://[::1]:9/x",
                "http://localhost/x"):  # fmt: skip
        reply = api.call("POST", "/notification-channels", {"name": "ok", "channel_kind": "webhook", "url": url,
                                                            "events": ["rpo_breach"]}, as_="operator")  # fmt: skip
        assert reply.status == 201, (url, reply.body)


# --- the CLI --------------------------------------------------------------------------------------
def test_cli_add_test_list_over_http(
    api: InProcessApi, hook: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lifeboat notifications`` against the API served over HTTP on 127.0.0.1."""
    from typer.testing import CliRunner

    from cli.main import app
    from functions.api import app as api_module
    from functions.embedded.http_server import make_server, serve_in_thread

    server = make_server(api_module, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        monkeypatch.setenv("LIFEBOAT_API", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("LIFEBOAT_TOKEN", api.tokens["operator"])
        monkeypatch.setenv("COLUMNS", "200")
        runner = CliRunner()
        added = runner.invoke(app, ["notifications", "add-channel", "--name", "ops", "--webhook", hook.url,
                                    "--event", "job_failed", "--plan", "web"])  # fmt: skip
        assert added.exit_code == 0, added.output
        hook.secret = re.search(r"lbwhsec_[A-Za-z0-9_-]+", added.output).group(0)  # type: ignore[union-attr]
        channel_id = re.search(r'"id": "(chan-[0-9a-f]+)"', added.output).group(1)  # type: ignore[union-attr]
        tested = runner.invoke(app, ["notifications", "test", channel_id])
        assert tested.exit_code == 0 and '"state": "delivered"' in tested.output, tested.output
        assert hook.received[-1].signature_ok
        listed = runner.invoke(app, ["notifications", "list", "--state", "delivered", "--json"])
        assert listed.exit_code == 0 and json.loads(listed.output)[0]["channel_id"] == channel_id
        channels = runner.invoke(app, ["notifications", "channels", "--json"])
        assert hook.secret not in channels.output and json.loads(channels.output)[0]["plan_ids"] == ["web"]
        both = runner.invoke(app, ["notifications", "add-channel", "--name", "x", "--event", "job_failed"])
        assert both.exit_code != 0 and "exactly one of --webhook and --sns-topic" in str(both.exception)
    finally:
        server.shutdown()
