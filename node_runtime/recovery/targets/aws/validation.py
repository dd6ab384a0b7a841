"""AWS boot validation: EC2 status checks and, with a marker, the console output.

Under moto 5, ``DescribeInstanceStatus`` answers ``ok``/``ok`` (reachability ``passed``)
for any running instance and ``GetConsoleOutput`` returns the same canned Xen boot log for
every instance (base64), so a guest marker is only "found" if it occurs in that text.
"""

from __future__ import annotations

import base64

from botocore.exceptions import BotoCoreError, ClientError

from node_runtime.recovery.targets.aws.common import AwsContext, aws_error, error_code
from node_runtime.recovery.targets.base import Evidence, Instance, ValidationSpec


class AwsValidator:
    """The :class:`~node_runtime.recovery.targets.base.BootValidator` on AWS."""

    def __init__(self, context: AwsContext) -> None:
        self.context = context

    def validate(self, instance: Instance, spec: ValidationSpec) -> Evidence:
        """Pass when EC2's instance and system status checks are both ``ok`` (and, with
        ``spec.marker``, the marker is in the decoded console output) within the timeout.

        Fails early if the instance is not running/pending. Under moto the checks are
        ``ok`` as soon as the instance runs and the console is a canned Xen boot log, so
        only the API flow is proven there, not a boot.
        """
        poll = self.context.poll
        ec2_id = instance.instance_id
        method = "status-checks" + ("+console-marker" if spec.marker else "")
        start = poll.clock()
        if not ec2_id.startswith("i-"):
            return Evidence(
                ok=False, method=method, seconds=0.0, reason="the machine was never powered on",
                detail={"instance_id": ec2_id},
            )  # fmt: skip
        deadline = start + spec.timeout_seconds
        summary: dict[str, str] = {}
        console = ""
        marker_found = False
        while True:
            try:
                statuses = self.context.ec2.describe_instance_status(
                    InstanceIds=[ec2_id], IncludeAllInstances=True
                )["InstanceStatuses"]
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(f"cannot read the status of {ec2_id}", exc, instance_id=ec2_id) from exc
            if statuses:
                s = statuses[0]
                summary = {
                    "state": str(s.get("InstanceState", {}).get("Name", "?")),
                    "instance_status": str(s.get("InstanceStatus", {}).get("Status", "?")),
                    "system_status": str(s.get("SystemStatus", {}).get("Status", "?")),
                }
            checks_ok = summary.get("instance_status") == "ok" and summary.get("system_status") == "ok"
            if spec.marker and not marker_found:
                console = self._console(ec2_id)
                marker_found = spec.marker in console
            ok = checks_ok and (marker_found or not spec.marker)
            dead = summary.get("state") not in (None, "pending", "running")
            now = poll.clock()
            if ok or dead or now >= deadline:
                break
            poll.sleep(min(poll.interval, max(0.0, deadline - now)))
        excerpt = " ".join(f"{k}={v}" for k, v in summary.items()) or "no status reported"
        if spec.marker:
            excerpt += "\n" + console[-2000:]
        reason = ""
        if not ok:
            if dead:
                reason = f"instance is {summary.get('state')}"
            elif not checks_ok:
                reason = f"status checks not ok after {spec.timeout_seconds} s"
            else:
                reason = f"marker {spec.marker!r} not on the console after {spec.timeout_seconds} s"
        return Evidence(
            ok=ok,
            method=method,
            seconds=max(0.0, poll.clock() - start),
            excerpt=excerpt,
            reason=reason,
            detail={**summary, "instance_id": ec2_id, "marker_found": marker_found},
        )

    def _console(self, ec2_id: str) -> str:
        ec2 = self.context.ec2
        try:
            try:
                out = ec2.get_console_output(InstanceId=ec2_id, Latest=True)
            except ClientError as exc:
                if error_code(exc) not in (
                    "UnsupportedOperation",
                    "InvalidParameterValue",
                    "InvalidParameter",
                ):
                    raise
                out = ec2.get_console_output(InstanceId=ec2_id)  # not a Nitro instance
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"cannot read the console of {ec2_id}", exc, instance_id=ec2_id) from exc
        raw = out.get("Output") or ""
        try:
            return base64.b64decode(raw, validate=True).decode("utf-8", "replace")
        except ValueError:
            return str(raw)
