"""The NotificationSender contract on every adapter: webhooks (a real HTTP receiver on
127.0.0.1) and SNS (moto, in process; a closed port for network errors). One attempt per
``send``; outcomes ``delivered``, ``retry`` (with ``retry_after`` when the receiver said so) or
``rejected``; the secret never appears in what a sender reports."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto import mock_aws

from shared.adapters.aws.sns_notifier import SnsSender
from shared.adapters.webhook_notifier import WebhookSender
from shared.domain.notifications import NotificationChannel
from shared.ports.notifier import NotificationSender
from tests.support.webhook_receiver import ReceiverServer

pytestmark = pytest.mark.ops

SECRET = "lbwhsec_contract-secret-value"
MESSAGE = {"text": "[Lifeboat] INFO test: contract", "lifeboat": {"event": "test", "severity": "info",
                                                                   "notification_id": "ntf-1"}}  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Setup:
    sender: NotificationSender
    ok: NotificationChannel  # delivers
    missing: NotificationChannel  # a target that does not exist: rejected
    unreachable: tuple[NotificationSender, NotificationChannel]  # nothing answers: retried
    received: Callable[[], int]  # how many messages the ok target got


def _webhook(url: str) -> NotificationChannel:
    return NotificationChannel(id="c1", name="c", channel_kind="webhook", url=url, events=["job_failed"])


def _sns(topic_arn: str) -> NotificationChannel:
    return NotificationChannel(
        id="c1", name="c", channel_kind="sns", topic_arn=topic_arn, events=["job_failed"]
    )


@pytest.fixture(params=["webhook", "sns"])
def setup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    if request.param == "webhook":
        server = ReceiverServer()
        hook = server.receiver
        hook.secret, hook.paths = SECRET, {"/gone": 404}
        sender = WebhookSender(timeout=2)
        yield Setup(sender, _webhook(hook.url), _webhook(hook.url.replace("/hook", "/gone")),
                    (sender, _webhook(f"http://127.0.0.1:{_closed_port()}/x")),
                    lambda: sum(r.signature_ok for r in hook.received if r.path == "/hook"))  # fmt: skip
        server.close()
        return
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        sns = boto3.client("sns", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        topic = sns.create_topic(Name="ok")["TopicArn"]
        queue = sqs.create_queue(QueueName="q")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        offline = boto3.client(
            "sns", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{_closed_port()}"
        )
        yield Setup(SnsSender(client=sns), _sns(topic), _sns("arn:aws:sns:us-east-1:123456789012:gone"),
                    (SnsSender(client=offline), _sns(topic)),
                    lambda: len(sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])))  # fmt: skip


def test_one_attempt_delivers(setup: Setup) -> None:
    result = setup.sender.send(setup.ok, MESSAGE, subject="Lifeboat info: test", secret=SECRET)
    assert result.outcome == "delivered", result
    assert setup.received() == 1


def test_a_missing_target_is_rejected_not_retried(setup: Setup) -> None:
    result = setup.sender.send(setup.missing, MESSAGE, subject="s", secret=SECRET)
    assert result.outcome == "rejected" and result.status in (404, 400, None), result
    assert SECRET not in result.detail and setup.received() == 0


def test_an_unreachable_target_is_retried(setup: Setup) -> None:
    sender, channel = setup.unreachable
    result = sender.send(channel, MESSAGE, subject="s", secret=SECRET)
    assert result.outcome == "retry" and result.status is None, result
    assert SECRET not in result.detail


def test_webhook_retry_after_and_redirects() -> None:
    server = ReceiverServer()
    try:
        server.receiver.script = [(503, {"Retry-After": "7"}), (302, {"Location": "https://elsewhere.example/"}),
                                  (408, {})]  # fmt: skip
        sender = WebhookSender(timeout=2)
        channel = _webhook(server.receiver.url)
        first = sender.send(channel, MESSAGE, subject="s", secret=SECRET)
        assert (first.outcome, first.status, first.retry_after) == ("retry", 503, 7.0)
        second = sender.send(channel, MESSAGE, subject="s", secret=SECRET)
        assert (second.outcome, second.status) == ("rejected", 302)  # never followed
        third = sender.send(channel, MESSAGE, subject="s", secret=SECRET)
        assert (third.outcome, third.status) == ("retry", 408)
        assert len(server.receiver.received) == 3
    finally:
        server.close()
