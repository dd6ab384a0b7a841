"""WorkflowStarter on AWS Step Functions (``StartExecution``), one state machine per flow."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import InvalidInputError, StoreError, TransientStoreError

_TRANSIENT = {"ThrottlingException", "ServiceUnavailable", "InternalServerError", "RequestTimeout"}


class StepFunctionsStarter:
    def __init__(
        self, state_machines: Mapping[str, str], *, client: Any = None, region: str | None = None
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("stepfunctions", region_name=region)
        self.client = client
        self.state_machines = {flow: arn for flow, arn in state_machines.items() if arn}

    def start(self, flow: str, execution_name: str, payload: dict[str, Any]) -> str:
        arn = self.state_machines.get(flow)
        if arn is None:
            raise InvalidInputError(f"no state machine is configured for flow {flow!r}", flow=flow)
        try:
            answer = self.client.start_execution(
                stateMachineArn=arn, name=execution_name, input=json.dumps(payload)
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ExecutionAlreadyExists":  # same name and input: the first run stands
                return f"{arn.replace(':stateMachine:', ':execution:')}:{execution_name}"
            cls = TransientStoreError if code in _TRANSIENT else StoreError
            raise cls(f"cannot start {flow} execution {execution_name}: {exc}", code=code) from exc
        except BotoCoreError as exc:
            raise TransientStoreError(f"cannot reach Step Functions: {exc}") from exc
        return str(answer["executionArn"])
