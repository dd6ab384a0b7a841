"""A local interpreter for Amazon States Language (JSONPath flavour).

The recovery flow is one ASL definition: AWS Step Functions runs it in the cloud,
:func:`run_state_machine` runs the same JSON in the embedded control plane, calling
Python task handlers in-process. Pure Python, no SDK.

Contract
--------

* The definition is validated before anything runs; problems raise
  :class:`InvalidDefinitionError` (a ``ValueError``) or one of its subclasses, with the
  location (``$.States.Name.Next``) in the message.
* Data is JSON: the execution input, handler inputs and handler results are copied
  through ``json`` so handlers cannot alias interpreter state. A handler result that is
  not JSON-serialisable fails the Task with ``Runtime.MarshalError`` (as Lambda does).
* Handler exceptions become ASL errors: :class:`TaskFailed` gives ``error``/``cause``
  verbatim; any other exception gives ``Error = type(exc).__name__`` and
  ``Cause = str(exc)``. (Step Functions' Lambda integration reports the same Error but
  a JSON ``Cause`` — ``{"errorMessage": ..., "errorType": ..., ...}``.)
* ``sleep`` is called for every Wait state and retry delay, ``clock`` stamps history
  events and bounds the top-level ``TimeoutSeconds``, ``now`` is the wall clock used for
  Wait ``Timestamp`` and the ``$$`` context object. Inject fakes to test time.

Supported
---------

States: Task, Pass, Choice, Wait, Succeed, Fail, Parallel (branches in threads), Map
(inline; ``Iterator`` or ``ItemProcessor``; ``ItemSelector`` or legacy ``Parameters``;
``MaxConcurrency``/``MaxConcurrencyPath``, 0 meaning up to :data:`MAP_CONCURRENCY_LIMIT`).
Input/output processing: ``InputPath``, ``Parameters``, ``ResultSelector``,
``ResultPath``, ``OutputPath`` in AWS's order; ``Retry`` (``ErrorEquals``,
``IntervalSeconds``, ``MaxAttempts``, ``BackoffRate``, ``MaxDelaySeconds``,
``JitterStrategy``) and ``Catch`` (``ErrorEquals``, ``Next``, ``ResultPath``); Task
``TimeoutSeconds``/``TimeoutSecondsPath`` (best effort: the handler runs in a daemon
thread that is abandoned, not killed, on timeout); top-level ``TimeoutSeconds``
(checked between states).

JSONPath subset: ``$``, ``$.a.b``, ``$.a-b``, ``$['a b']``, ``$.a[0]``, ``$.a[-1]``,
``$.a[*]``, ``$.a.*``, ``$.a[1:3]``; ``$$`` addresses the context object
(``Execution``, ``StateMachine``, ``State``, and ``Map.Item.Value``/``Index`` inside
``ItemSelector``). A path with ``*`` or a slice yields a list.

Intrinsic functions: every name in :data:`SUPPORTED_INTRINSICS` (all 18 of AWS's).
``States.JsonMerge`` supports shallow merges only (as AWS). ``States.MathRandom`` is
inclusive of both ends (as moto).

Errors: ``States.ALL`` matches every error except ``States.Runtime`` and
``States.DataLimitExceeded``; ``States.TaskFailed`` matches every error except those and
``States.Timeout``; ``States.Runtime`` is never retried or caught (as AWS documents).

Not supported (rejected before running with :class:`UnsupportedFeatureError`): JSONata
(``QueryLanguage: JSONata``, ``Arguments``, ``Output``), variables (``Assign``),
Distributed Map (``ItemReader``, ``ItemBatcher``, ``ResultWriter``,
``ToleratedFailure*``, ``ProcessorConfig.Mode: DISTRIBUTED``). Ignored: ``Credentials``,
``HeartbeatSeconds``, ``Comment``, ``Label``. ``.sync``/``.waitForTaskToken``
integrations run only if that exact resource string is registered in ``resources``.
JSONPath filters (``?()``), unions and ``..`` are rejected.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NoReturn

__all__ = [
    "MAP_CONCURRENCY_LIMIT",
    "SUPPORTED_INTRINSICS",
    "Event",
    "EventType",
    "Execution",
    "ExecutionStatus",
    "InvalidDefinitionError",
    "MissingTransitionError",
    "StateTiming",
    "TaskFailed",
    "UnknownFieldError",
    "UnknownResourceError",
    "UnknownStateError",
    "UnknownStateTypeError",
    "UnreachableStateError",
    "UnsupportedFeatureError",
    "run_state_machine",
    "validate_definition",
]

Handler = Callable[[Any], Any]

#: Concurrency of a Map state whose ``MaxConcurrency`` is 0 (unbounded): inline Map in
#: Step Functions runs at most 40 iterations at a time.
MAP_CONCURRENCY_LIMIT = 40

# ASL error names -----------------------------------------------------------------------
ALL = "States.ALL"
TASK_FAILED = "States.TaskFailed"
RUNTIME = "States.Runtime"
TIMEOUT = "States.Timeout"
DATA_LIMIT = "States.DataLimitExceeded"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
MARSHAL_ERROR = "Runtime.MarshalError"
FUNCTION_NOT_FOUND = "Lambda.ResourceNotFoundException"

_UNCATCHABLE = frozenset({RUNTIME, DATA_LIMIT})


# --- public errors ---------------------------------------------------------------------
class InvalidDefinitionError(ValueError):
    """The definition is not valid ASL; ``where`` locates the problem (``$.States.X``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class UnknownStateTypeError(InvalidDefinitionError):
    """A state's ``Type`` is not one of the eight ASL state types."""


class MissingTransitionError(InvalidDefinitionError):
    """A state that must say where to go has neither ``Next`` nor ``End: true`` (or both)."""


class UnknownStateError(InvalidDefinitionError):
    """``StartAt``, ``Next``, ``Default`` or a Catch ``Next`` names a state that does not exist."""


class UnreachableStateError(InvalidDefinitionError):
    """A state cannot be reached from ``StartAt`` (Step Functions rejects these too)."""


class UnknownFieldError(InvalidDefinitionError):
    """A state or rule carries a field ASL does not define for it (usually a typo)."""


class UnknownResourceError(InvalidDefinitionError):
    """A Task's static resource has no handler in ``resources``."""


class UnsupportedFeatureError(InvalidDefinitionError):
    """Valid ASL that this interpreter deliberately does not implement (see module doc)."""


class TaskFailed(Exception):
    """Raise from a task handler to fail the Task with an explicit ASL ``error`` and ``cause``."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class _StatesError(Exception):
    """A runtime ASL error travelling through the interpreter; Retry/Catch match ``error``."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


class _Aborted(Exception):
    """A sibling branch or iteration failed: stop at the next state boundary."""


class _TimedOut(Exception):
    """The state machine's own ``TimeoutSeconds`` elapsed."""


class _SyntaxProblem(ValueError):
    """A path or intrinsic expression does not parse (becomes InvalidDefinitionError)."""


# --- history ----------------------------------------------------------------------------
class EventType(StrEnum):
    """Kinds of history events. ``data`` keys are listed next to each."""

    EXECUTION_STARTED = "ExecutionStarted"  # input
    EXECUTION_SUCCEEDED = "ExecutionSucceeded"  # output
    EXECUTION_FAILED = "ExecutionFailed"  # error, cause
    EXECUTION_TIMED_OUT = "ExecutionTimedOut"  # error, cause
    STATE_ENTERED = "StateEntered"  # input, type
    STATE_EXITED = "StateExited"  # status, entered, duration, next, output | error, cause
    STATE_FAILED = "StateFailed"  # error, cause (one per failed attempt)
    RETRY_SCHEDULED = "RetryScheduled"  # error, attempt, delay
    ERROR_CAUGHT = "ErrorCaught"  # error, cause, next


class ExecutionStatus(StrEnum):
    """Final status of an execution, named as Step Functions names them."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"


Scope = tuple[str | int, ...]


@dataclass(frozen=True)
class Event:
    """One history event. ``timestamp`` comes from the injected ``clock``.

    ``scope`` places the state: ``()`` at top level, ``("Restore", 1)`` inside branch 1
    of Parallel state ``Restore`` (or iteration 1 of a Map), and so on down.
    """

    type: EventType
    timestamp: float
    state: str | None = None
    scope: Scope = ()
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StateTiming:
    """How long one visit to a state took; ``status`` is succeeded, caught, failed or aborted."""

    name: str
    scope: Scope
    entered: float
    exited: float
    status: str
    error: str | None = None

    @property
    def duration(self) -> float:
        return self.exited - self.entered


@dataclass
class Execution:
    """The outcome of :func:`run_state_machine`.

    ``output`` is set when ``status`` is SUCCEEDED; ``error``/``cause`` otherwise.
    ``history`` lists every event in the order it was recorded.
    """

    status: ExecutionStatus
    output: Any = None
    error: str | None = None
    cause: str | None = None
    history: list[Event] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status is ExecutionStatus.SUCCEEDED

    def timings(self) -> list[StateTiming]:
        """Every state visit in the order the visits began: the raw material of a timing report."""
        order: dict[tuple[Scope, str | None], list[int]] = {}
        visits: list[StateTiming | None] = []
        for event in self.history:
            key = (event.scope, event.state)
            if event.type is EventType.STATE_ENTERED:
                order.setdefault(key, []).append(len(visits))
                visits.append(None)
            elif event.type is EventType.STATE_EXITED:
                visits[order[key].pop()] = StateTiming(
                    name=event.state or "",
                    scope=event.scope,
                    entered=event.data["entered"],
                    exited=event.timestamp,
                    status=event.data["status"],
                    error=event.data.get("error"),
                )
        return [visit for visit in visits if visit is not None]


# --- JSON helpers -------------------------------------------------------------------------
def _json_copy(value: Any) -> Any:
    """A deep copy that is guaranteed to be plain JSON (raises TypeError/ValueError if not)."""
    return json.loads(json.dumps(value))


def _json_key(value: Any) -> str:
    """A canonical text for JSON equality (keeps ``true`` and ``1`` apart)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = _json_key(value)
    return text if len(text) <= 200 else text[:197] + "..."


# --- JSONPath -----------------------------------------------------------------------------
Segment = tuple[str, Any]  # ("key", str) | ("index", int) | ("wild", None) | ("slice", (a, b))

_INDEX = re.compile(r"-?\d+")
_SLICE = re.compile(r"(-?\d*):(-?\d*)")


@functools.lru_cache(maxsize=2048)
def _parse_path(path: str) -> tuple[Segment, ...]:
    """Parse a JSONPath of the supported subset into segments; raises _SyntaxProblem."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise _SyntaxProblem(f"path {path!r} must start with '$'")
    segments: list[Segment] = []
    pos = 1
    while pos < len(path):
        if path.startswith("..", pos):
            raise _SyntaxProblem(f"path {path!r}: recursive descent '..' is not supported")
        if path[pos] == ".":
            end = pos + 1
            while end < len(path) and path[end] not in ".[":
                end += 1
            name = path[pos + 1 : end]
            if not name:
                raise _SyntaxProblem(f"path {path!r}: empty name after '.'")
            segments.append(("wild", None) if name == "*" else ("key", name))
            pos = end
        elif path[pos] == "[":
            end = _closing_bracket(path, pos)
            segments.append(_bracket_segment(path, path[pos + 1 : end].strip()))
            pos = end + 1
        else:
            raise _SyntaxProblem(f"path {path!r}: unexpected {path[pos]!r} at {pos}")
    return tuple(segments)


def _closing_bracket(path: str, start: int) -> int:
    """Index of the ``]`` closing the ``[`` at ``start``, skipping quoted text."""
    quote = None
    for pos in range(start + 1, len(path)):
        char = path[pos]
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "]":
            return pos
    raise _SyntaxProblem(f"path {path!r}: unclosed '['")


def _bracket_segment(path: str, inner: str) -> Segment:
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return ("key", inner[1:-1])
    if inner == "*":
        return ("wild", None)
    if _INDEX.fullmatch(inner):
        return ("index", int(inner))
    match = _SLICE.fullmatch(inner)
    if match:
        start, stop = (int(part) if part else None for part in match.groups())
        return ("slice", (start, stop))
    raise _SyntaxProblem(f"path {path!r}: unsupported selector [{inner}]")


def _is_definite(segments: Sequence[Segment]) -> bool:
    return all(kind in ("key", "index") for kind, _ in segments)


def _select(data: Any, segments: Sequence[Segment]) -> list[Any]:
    """Every node the segments reach from ``data`` (no match is an empty list)."""
    nodes = [data]
    for kind, arg in segments:
        nodes = [child for node in nodes for child in _children(node, kind, arg)]
    return nodes


def _children(node: Any, kind: str, arg: Any) -> list[Any]:
    if kind == "key":
        return [node[arg]] if isinstance(node, dict) and arg in node else []
    if kind == "index":
        return [node[arg]] if isinstance(node, list) and -len(node) <= arg < len(node) else []
    if kind == "wild":
        return list(node.values()) if isinstance(node, dict) else list(node) if isinstance(node, list) else []
    return node[arg[0] : arg[1]] if isinstance(node, list) else []


def _read(path: str, data: Any, error: str) -> Any:
    """The value at ``path``; a list for paths with ``*``/slices. Missing → ``error``."""
    try:
        segments = _parse_path(path)
    except _SyntaxProblem as exc:
        raise _StatesError(error, str(exc)) from None
    nodes = _select(data, segments)
    if not _is_definite(segments):
        return nodes
    if not nodes:
        raise _StatesError(error, f"Invalid path '{path}': no results in {_short(data)}")
    return nodes[0]


def _resolve(path: str, data: Any, context: Any, error: str = RUNTIME) -> Any:
    """Read ``path`` from the data, or from the context object when it starts with ``$$``."""
    if path.startswith("$$"):
        return _read(path[1:], context, error)
    return _read(path, data, error)


def _write(data: Any, path: str, value: Any) -> Any:
    """``data`` with ``value`` placed at ``path`` (ResultPath semantics), copying on write.

    Missing objects along the path are created; a non-object on the way (or at the root)
    fails with ``States.ResultPathMatchFailure``.
    """
    return _assign(data, _parse_path(path), value, path)


def _assign(node: Any, segments: Sequence[Segment], value: Any, path: str) -> Any:
    if not segments:
        return value
    (kind, arg), rest = segments[0], segments[1:]
    if kind == "key" and isinstance(node, dict):
        updated = dict(node)
        updated[arg] = _assign(node.get(arg, {}), rest, value, path)
        return updated
    if kind == "index" and isinstance(node, list) and -len(node) <= arg < len(node):
        items = list(node)
        items[arg] = _assign(node[arg], rest, value, path)
        return items
    raise _StatesError(
        RESULT_PATH_MATCH_FAILURE, f"Unable to apply ResultPath '{path}' to input {_short(node)}"
    )


# --- intrinsic functions ----------------------------------------------------------------
@dataclass(frozen=True)
class _Literal:
    value: Any
    chunks: tuple[str, ...] | None = None  # strings: text split at unescaped '{}'


@dataclass(frozen=True)
class _Ref:
    path: str


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[_Literal | _Ref | _Call, ...]


_NAME = re.compile(r"States\.[A-Za-z0-9]+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_WORDS = {"true": True, "false": False, "null": None}


class _IntrinsicParser:
    """Recursive-descent parser for ``States.Fn(arg, ...)`` expressions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> _Call:
        call = self._call()
        self._skip_spaces()
        if self.pos != len(self.text):
            self._fail("unexpected text after the closing ')'")
        return call

    def _fail(self, message: str) -> NoReturn:
        raise _SyntaxProblem(f"intrinsic {self.text!r} at {self.pos}: {message}")

    def _skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _call(self) -> _Call:
        match = _NAME.match(self.text, self.pos)
        if not match:
            self._fail("expected States.<Function>(")
        name = match.group()
        if name not in _INTRINSICS:
            self._fail(f"unknown intrinsic function {name}")
        self.pos = match.end()
        self._skip_spaces()
        if not self.text.startswith("(", self.pos):
            self._fail("expected '('")
        self.pos += 1
        args = self._arguments()
        low, high = _INTRINSICS[name][1:]
        if not low <= len(args) <= (high if high is not None else len(args)):
            self._fail(f"{name} takes {low}..{high if high is not None else 'n'} arguments, got {len(args)}")
        return _Call(name, tuple(args))

    def _arguments(self) -> list[_Literal | _Ref | _Call]:
        args: list[_Literal | _Ref | _Call] = []
        self._skip_spaces()
        if self.text.startswith(")", self.pos):
            self.pos += 1
            return args
        while True:
            self._skip_spaces()
            args.append(self._argument())
            self._skip_spaces()
            if self.text.startswith(")", self.pos):
                self.pos += 1
                return args
            if not self.text.startswith(",", self.pos):
                self._fail("expected ',' or ')'")
            self.pos += 1

    def _argument(self) -> _Literal | _Ref | _Call:
        rest = self.text[self.pos :]
        if rest.startswith("'"):
            return self._string()
        if rest.startswith("$"):
            return self._path()
        if rest.startswith("States."):
            return self._call()
        for word, value in _WORDS.items():
            if rest.startswith(word):
                self.pos += len(word)
                return _Literal(value)
        match = _NUMBER.match(self.text, self.pos)
        if not match:
            self._fail("expected a string, number, boolean, null, path or function")
        self.pos = match.end()
        number = match.group()
        return _Literal(int(number) if match.group(1) is None and match.group(2) is None else float(number))

    def _string(self) -> _Literal:
        chunks = [""]
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                chunks[-1] += self.text[self.pos + 1]
                self.pos += 2
            elif char == "'":
                self.pos += 1
                return _Literal("{}".join(chunks), tuple(chunks))
            elif self.text.startswith("{}", self.pos):
                chunks.append("")
                self.pos += 2
            else:
                chunks[-1] += char
                self.pos += 1
        self._fail("unterminated string")

    def _path(self) -> _Ref:
        start, depth, quote = self.pos, 0, None
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if quote:
                quote = None if char == quote else quote
            elif char in "'\"" and depth:
                quote = char
            elif char == "[":
                depth += 1
            elif char == "]":
                depth -= 1
            elif depth == 0 and (char in ",)" or char.isspace()):
                break
            self.pos += 1
        path = self.text[start : self.pos]
        _parse_path(path[1:] if path.startswith("$$") else path)
        return _Ref(path)


@functools.lru_cache(maxsize=1024)
def _parse_intrinsic(text: str) -> _Call:
    return _IntrinsicParser(text).parse()


def _evaluate(expression: str, data: Any, context: Any) -> Any:
    """The value of a ``.$`` field: a path, a ``$$`` context path, or an intrinsic call."""
    if expression.startswith("$"):
        return _resolve(expression, data, context, PARAMETER_PATH_FAILURE)
    try:
        call = _parse_intrinsic(expression)
    except _SyntaxProblem as exc:
        raise _StatesError(INTRINSIC_FAILURE, str(exc)) from None
    return _call_intrinsic(call, data, context)


def _call_intrinsic(call: _Call, data: Any, context: Any) -> Any:
    args = [_argument_value(arg, data, context) for arg in call.args]
    if call.name == "States.Format" and call.args:
        first = call.args[0]
        template = first.chunks if isinstance(first, _Literal) and first.chunks is not None else None
        args[0] = template if template is not None else _chunks_of(args[0])
    function = _INTRINSICS[call.name][0]
    try:
        return function(*args)
    except _StatesError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError) as exc:
        raise _StatesError(INTRINSIC_FAILURE, f"{call.name}: {exc}") from None


def _argument_value(arg: _Literal | _Ref | _Call, data: Any, context: Any) -> Any:
    if isinstance(arg, _Literal):
        return arg.value
    if isinstance(arg, _Ref):
        return _resolve(arg.path, data, context, INTRINSIC_FAILURE)
    return _call_intrinsic(arg, data, context)


def _chunks_of(template: Any) -> tuple[str, ...]:
    if not isinstance(template, str):
        raise _StatesError(INTRINSIC_FAILURE, "States.Format: the template must be a string")
    return tuple(template.split("{}"))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _fn_format(chunks: tuple[str, ...], *values: Any) -> str:
    _require(len(chunks) - 1 == len(values), f"{len(chunks) - 1} placeholders but {len(values)} values")
    _require(
        all(not isinstance(v, dict | list) for v in values),
        "values must be strings, numbers, booleans or null",
    )
    texts = [v if isinstance(v, str) else json.dumps(v) for v in values]
    return chunks[0] + "".join(text + chunk for text, chunk in zip(texts, chunks[1:], strict=True))


def _fn_string_to_json(text: Any) -> Any:
    _require(isinstance(text, str), "the argument must be a string")
    return json.loads(text) if text.strip() else None


def _fn_json_to_string(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _fn_array(*values: Any) -> list[Any]:
    return list(values)


def _fn_array_partition(items: Any, size: Any) -> list[Any]:
    _require(isinstance(items, list) and _is_int(size) and size > 0, "expects (array, positive integer)")
    return [items[i : i + size] for i in range(0, len(items), size)]


def _fn_array_contains(items: Any, value: Any) -> bool:
    _require(isinstance(items, list), "the first argument must be an array")
    return _json_key(value) in {_json_key(item) for item in items}


def _fn_array_range(start: Any, end: Any, step: Any) -> list[int]:
    _require(
        all(_is_int(v) for v in (start, end, step)) and step != 0, "expects integers and a non-zero step"
    )
    values = list(range(start, end + (1 if step > 0 else -1), step))
    _require(len(values) <= 1000, "at most 1000 items")
    return values


def _fn_array_get_item(items: Any, index: Any) -> Any:
    _require(isinstance(items, list) and _is_int(index) and 0 <= index < len(items), "index out of range")
    return items[index]


def _fn_array_length(items: Any) -> int:
    _require(isinstance(items, list), "the argument must be an array")
    return len(items)


def _fn_array_unique(items: Any) -> list[Any]:
    _require(isinstance(items, list), "the argument must be an array")
    seen: dict[str, Any] = {}
    for item in items:
        seen.setdefault(_json_key(item), item)
    return list(seen.values())


def _fn_base64_encode(text: Any) -> str:
    _require(isinstance(text, str), "the argument must be a string")
    return base64.b64encode(text.encode()).decode()


def _fn_base64_decode(text: Any) -> str:
    _require(isinstance(text, str), "the argument must be a string")
    return base64.b64decode(text.encode(), validate=True).decode()


_HASHES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


def _fn_hash(value: Any, algorithm: Any) -> str:
    _require(algorithm in _HASHES, f"algorithm must be one of {sorted(_HASHES)}")
    text = value if isinstance(value, str) else _fn_json_to_string(value)
    return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()


def _fn_json_merge(left: Any, right: Any, deep: Any) -> dict[str, Any]:
    _require(isinstance(left, dict) and isinstance(right, dict), "expects two objects")
    _require(deep is False, "only shallow merges (false) are supported")
    return {**left, **right}


def _fn_math_random(start: Any, end: Any, seed: Any = None) -> int:
    _require(_is_int(start) and _is_int(end) and (seed is None or _is_int(seed)), "expects integers")
    return random.Random(seed).randint(start, end)


def _fn_math_add(left: Any, right: Any) -> Any:
    _require(_is_number(left) and _is_number(right), "expects two numbers")
    return left + right


def _fn_string_split(text: Any, delimiters: Any) -> list[str]:
    _require(
        isinstance(text, str) and isinstance(delimiters, str) and bool(delimiters), "expects two strings"
    )
    pattern = "|".join(re.escape(char) for char in delimiters)
    return [part for part in re.split(pattern, text) if part]


def _fn_uuid() -> str:
    return str(uuid.uuid4())


# name -> (function, minimum arguments, maximum arguments or None for any)
_INTRINSICS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "States.Format": (_fn_format, 1, None),
    "States.StringToJson": (_fn_string_to_json, 1, 1),
    "States.JsonToString": (_fn_json_to_string, 1, 1),
    "States.Array": (_fn_array, 0, None),
    "States.ArrayPartition": (_fn_array_partition, 2, 2),
    "States.ArrayContains": (_fn_array_contains, 2, 2),
    "States.ArrayRange": (_fn_array_range, 3, 3),
    "States.ArrayGetItem": (_fn_array_get_item, 2, 2),
    "States.ArrayLength": (_fn_array_length, 1, 1),
    "States.ArrayUnique": (_fn_array_unique, 1, 1),
    "States.Base64Encode": (_fn_base64_encode, 1, 1),
    "States.Base64Decode": (_fn_base64_decode, 1, 1),
    "States.Hash": (_fn_hash, 2, 2),
    "States.JsonMerge": (_fn_json_merge, 3, 3),
    "States.MathRandom": (_fn_math_random, 2, 3),
    "States.MathAdd": (_fn_math_add, 2, 2),
    "States.StringSplit": (_fn_string_split, 2, 2),
    "States.UUID": (_fn_uuid, 0, 0),
}

#: Intrinsic functions this interpreter implements.
SUPPORTED_INTRINSICS = frozenset(_INTRINSICS)


# --- payload templates (Parameters, ItemSelector, ResultSelector) -----------------------
def _render(template: Any, data: Any, context: Any) -> Any:
    """Evaluate a payload template: ``"k.$"`` fields are replaced by ``k`` with their value."""
    if isinstance(template, dict):
        rendered: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                rendered[key[:-2]] = _evaluate(value, data, context)
            else:
                rendered[key] = _render(value, data, context)
        return rendered
    if isinstance(template, list):
        return [_render(item, data, context) for item in template]
    return template


# --- Choice rules ------------------------------------------------------------------------
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp with an offset (``2016-03-14T01:59:00Z``), or None."""
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        return None
    text = re.sub(r"\.(\d{6})\d+", r".\1", value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _wildcard(pattern: str) -> re.Pattern[str]:
    """StringMatches: ``*`` matches anything, ``\\*`` a literal star, ``\\\\`` a backslash."""
    parts, pos = [], 0
    while pos < len(pattern):
        if pattern[pos] == "\\" and pos + 1 < len(pattern):
            parts.append(re.escape(pattern[pos + 1]))
            pos += 2
        else:
            parts.append(".*" if pattern[pos] == "*" else re.escape(pattern[pos]))
            pos += 1
    return re.compile("".join(parts), re.DOTALL)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "GreaterThan": lambda a, b: a > b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThanEquals": lambda a, b: a >= b,
}
_KINDS: dict[str, Callable[[Any], Any]] = {
    "String": lambda v: v if isinstance(v, str) else None,
    "Numeric": lambda v: v if _is_number(v) else None,
    "Timestamp": _parse_timestamp,
    "Boolean": lambda v: v if isinstance(v, bool) else None,
}
_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda v: v is None,
    "IsNumeric": _is_number,
    "IsString": lambda v: isinstance(v, str),
    "IsBoolean": lambda v: isinstance(v, bool),
    "IsTimestamp": lambda v: _parse_timestamp(v) is not None,
}
_COMPARISONS: dict[str, tuple[str, str]] = {
    f"{kind}{order}": (kind, order)
    for kind in _KINDS
    for order in _ORDER
    if kind != "Boolean" or order == "Equals"
}
_OPERATORS = (
    set(_COMPARISONS)
    | {f"{name}Path" for name in _COMPARISONS}
    | set(_TYPE_TESTS)
    | {"IsPresent", "StringMatches", "And", "Or", "Not"}
)


def _operator(rule: Mapping[str, Any]) -> str:
    operators = [key for key in rule if key in _OPERATORS]
    return operators[0]


def _rule_matches(rule: Mapping[str, Any], data: Any, context: Any) -> bool:
    """Evaluate one Choice rule against the Choice state's (InputPath-filtered) input.

    Operands of the wrong type never match; a ``Variable`` (or ``...Path`` operand) that
    does not exist fails with ``States.Runtime``, except under ``IsPresent``.
    """
    operator = _operator(rule)
    if operator == "And":
        return all(_rule_matches(sub, data, context) for sub in rule["And"])
    if operator == "Or":
        return any(_rule_matches(sub, data, context) for sub in rule["Or"])
    if operator == "Not":
        return not _rule_matches(rule["Not"], data, context)
    variable, expected = rule["Variable"], rule[operator]
    if operator == "IsPresent":
        try:
            _resolve(variable, data, context)
        except _StatesError:
            return expected is False
        return expected is True
    value = _resolve(variable, data, context)
    if operator in _TYPE_TESTS:
        return _TYPE_TESTS[operator](value) is expected
    if operator == "StringMatches":
        return isinstance(value, str) and _wildcard(expected).fullmatch(value) is not None
    if operator.endswith("Path"):
        operator, expected = operator[: -len("Path")], _resolve(expected, data, context)
    kind, order = _COMPARISONS[operator]
    left, right = _KINDS[kind](value), _KINDS[kind](expected)
    return left is not None and right is not None and _ORDER[order](left, right)


# --- error matching and retry policy ----------------------------------------------------
def _error_matches(names: Sequence[str], error: str) -> bool:
    """Does a Retrier's or Catcher's ``ErrorEquals`` match ``error``?"""
    if error in _UNCATCHABLE:
        return False
    if ALL in names:
        return True
    if TASK_FAILED in names and error != TIMEOUT:
        return True
    return error in names


def _retry_delay(retriers: Sequence[Mapping[str, Any]], attempts: list[int], error: str) -> float | None:
    """Seconds to wait before the next attempt, or None when no retrier applies.

    The first retrier whose ``ErrorEquals`` matches decides; each keeps its own count.
    Delay n (0-based) is ``IntervalSeconds * BackoffRate**n`` capped by
    ``MaxDelaySeconds``; ``JitterStrategy: FULL`` draws uniformly below that.
    """
    for index, retrier in enumerate(retriers):
        if not _error_matches(retrier["ErrorEquals"], error):
            continue
        if attempts[index] >= retrier.get("MaxAttempts", 3):
            return None
        delay = (
            float(retrier.get("IntervalSeconds", 1))
            * float(retrier.get("BackoffRate", 2.0)) ** attempts[index]
        )
        attempts[index] += 1
        if "MaxDelaySeconds" in retrier:
            delay = min(delay, float(retrier["MaxDelaySeconds"]))
        if retrier.get("JitterStrategy") == "FULL":
            delay = random.uniform(0, delay)
        return delay
    return None


# --- resources ---------------------------------------------------------------------------
_LAMBDA_INVOKE = re.compile(r"arn:[\w-]+:states:[^:]*:[^:]*:lambda:invoke")
_FUNCTION_REF = re.compile(r"(?:^|:)function:([^:]+)")


def _function_name(reference: str) -> str:
    """``NAME`` from a function name, ``NAME:alias``, or a full/partial Lambda ARN."""
    match = _FUNCTION_REF.search(reference)
    if match:
        return match.group(1)
    return reference.split(":", 1)[0]


def _lookup(resources: Mapping[str, Handler], reference: str) -> Handler | None:
    return resources.get(reference) or resources.get(_function_name(reference))


def _is_lambda_invoke(resource: str, resources: Mapping[str, Handler]) -> bool:
    return resource not in resources and _LAMBDA_INVOKE.fullmatch(resource) is not None


def _lambda_response(payload: Any) -> dict[str, Any]:
    """What the ``lambda:invoke`` integration returns (Step Functions also adds Sdk* metadata)."""
    return {"ExecutedVersion": "$LATEST", "Payload": payload, "StatusCode": 200}


# --- validation --------------------------------------------------------------------------
_MACHINE_FIELDS = frozenset({"StartAt", "States", "Comment", "Version", "TimeoutSeconds", "QueryLanguage"})
_BASE = frozenset({"Type", "Comment", "QueryLanguage", "InputPath", "OutputPath"})
_FLOW = frozenset({"Next", "End"})
_STATE_FIELDS: dict[str, frozenset[str]] = {
    "Task": _BASE
    | _FLOW
    | {
        "Resource",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
        "TimeoutSeconds",
        "TimeoutSecondsPath",
        "HeartbeatSeconds",
        "HeartbeatSecondsPath",
        "Credentials",
    },
    "Pass": _BASE | _FLOW | {"Parameters", "ResultPath", "Result"},
    "Choice": _BASE | {"Choices", "Default"},
    "Wait": _BASE | _FLOW | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
    "Succeed": _BASE,
    "Fail": frozenset({"Type", "Comment", "QueryLanguage", "Error", "ErrorPath", "Cause", "CausePath"}),
    "Parallel": _BASE | _FLOW | {"Parameters", "ResultSelector", "ResultPath", "Retry", "Catch", "Branches"},
    "Map": _BASE
    | _FLOW
    | {
        "ItemsPath",
        "ItemSelector",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
        "Iterator",
        "ItemProcessor",
        "MaxConcurrency",
        "MaxConcurrencyPath",
        "Label",
    },
}
_UNSUPPORTED_FIELDS = {
    "Assign": "variables (Assign)",
    "Arguments": "JSONata (Arguments)",
    "Output": "JSONata (Output)",
    "ItemReader": "Distributed Map (ItemReader)",
    "ItemBatcher": "Distributed Map (ItemBatcher)",
    "ResultWriter": "Distributed Map (ResultWriter)",
    "ToleratedFailurePercentage": "Distributed Map (ToleratedFailurePercentage)",
    "ToleratedFailurePercentagePath": "Distributed Map (ToleratedFailurePercentagePath)",
    "ToleratedFailureCount": "Distributed Map (ToleratedFailureCount)",
    "ToleratedFailureCountPath": "Distributed Map (ToleratedFailureCountPath)",
}
_RETRIER_FIELDS = frozenset(
    {
        "ErrorEquals",
        "IntervalSeconds",
        "MaxAttempts",
        "BackoffRate",
        "MaxDelaySeconds",
        "JitterStrategy",
        "Comment",
    }
)
_CATCHER_FIELDS = frozenset({"ErrorEquals", "Next", "ResultPath", "Comment"})
_WAIT_FIELDS = ("Seconds", "SecondsPath", "Timestamp", "TimestampPath")


def validate_definition(
    definition: Mapping[str, Any] | str, resources: Mapping[str, Handler] | None = None
) -> dict[str, Any]:
    """Parse and check a definition; return it as a dict. Raises InvalidDefinitionError.

    With ``resources``, every Task whose target is known statically must have a handler.
    """
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except json.JSONDecodeError as exc:
            raise InvalidDefinitionError("$", f"not JSON: {exc}") from None
    if not isinstance(definition, Mapping):
        raise InvalidDefinitionError("$", "a definition is a JSON object")
    machine = dict(definition)
    _check_machine(machine, "$", resources, _MACHINE_FIELDS)
    return machine


def _fail(where: str, message: str, kind: type[InvalidDefinitionError] = InvalidDefinitionError) -> NoReturn:
    raise kind(where, message)


def _check_machine(
    machine: Any, where: str, resources: Mapping[str, Handler] | None, allowed: frozenset[str]
) -> None:
    if not isinstance(machine, Mapping):
        _fail(where, "must be an object with StartAt and States")
    _check_fields(machine, allowed, where)
    if machine.get("QueryLanguage", "JSONPath") != "JSONPath":
        _fail(where, "only QueryLanguage JSONPath is supported", UnsupportedFeatureError)
    if "TimeoutSeconds" in machine and not _positive_int(machine["TimeoutSeconds"]):
        _fail(f"{where}.TimeoutSeconds", "must be a positive integer")
    states = machine.get("States")
    if not isinstance(states, Mapping) or not states:
        _fail(f"{where}.States", "must be a non-empty object")
    if not _known(states, machine.get("StartAt")):
        _fail(f"{where}.StartAt", f"unknown state {machine.get('StartAt')!r}", UnknownStateError)
    for name, state in states.items():
        _check_state(state, states, f"{where}.States.{name}", resources)
    _check_reachable(machine, where)


def _check_fields(node: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    for key in node:
        if key in _UNSUPPORTED_FIELDS:
            _fail(f"{where}.{key}", f"{_UNSUPPORTED_FIELDS[key]} is not supported", UnsupportedFeatureError)
        if key not in allowed:
            _fail(f"{where}.{key}", "unknown field", UnknownFieldError)


def _known(states: Mapping[str, Any], name: Any) -> bool:
    return isinstance(name, str) and name in states


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _check_state(
    state: Any, states: Mapping[str, Any], where: str, resources: Mapping[str, Handler] | None
) -> None:
    if not isinstance(state, Mapping):
        _fail(where, "a state is an object")
    kind = state.get("Type")
    if kind not in _STATE_FIELDS:
        _fail(f"{where}.Type", f"unknown state type {kind!r}", UnknownStateTypeError)
    _check_fields(state, _STATE_FIELDS[kind], where)
    if _STATE_FIELDS[kind] >= _FLOW:
        _check_transition(state, states, where)
    _check_paths(state, where)
    _check_templates(state, where)
    for policy in ("Retry", "Catch"):
        if not isinstance(state.get(policy, []), list):
            _fail(f"{where}.{policy}", "must be a list")
    for index, retrier in enumerate(state.get("Retry", [])):
        _check_retrier(retrier, f"{where}.Retry[{index}]", last=index == len(state["Retry"]) - 1)
    for index, catcher in enumerate(state.get("Catch", [])):
        _check_catcher(catcher, states, f"{where}.Catch[{index}]", last=index == len(state["Catch"]) - 1)
    _TYPE_CHECKS[kind](state, states, where, resources)


def _check_transition(state: Mapping[str, Any], states: Mapping[str, Any], where: str) -> None:
    ends = state.get("End") is True
    if ("Next" in state) == ends:
        _fail(where, "needs exactly one of Next or End: true", MissingTransitionError)
    if "Next" in state and not _known(states, state["Next"]):
        _fail(f"{where}.Next", f"unknown state {state['Next']!r}", UnknownStateError)


def _check_path(value: Any, where: str, *, nullable: bool = True, result: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str):
        _fail(where, "must be a path string")
    try:
        segments = _parse_path(value[1:] if isinstance(value, str) and value.startswith("$$") else value)
    except _SyntaxProblem as exc:
        _fail(where, str(exc))
    if result and (value.startswith("$$") or not _is_definite(segments)):
        _fail(where, "ResultPath must be a definite path into the state input")


def _check_paths(state: Mapping[str, Any], where: str) -> None:
    for name in ("InputPath", "OutputPath", "ItemsPath"):
        if name in state:
            _check_path(state[name], f"{where}.{name}", nullable=name != "ItemsPath")
    if "ResultPath" in state:
        _check_path(state["ResultPath"], f"{where}.ResultPath", result=True)
    for name in ("SecondsPath", "TimestampPath", "TimeoutSecondsPath", "MaxConcurrencyPath"):
        if name in state:
            _check_path(state[name], f"{where}.{name}", nullable=False)


def _check_templates(state: Mapping[str, Any], where: str) -> None:
    for name in ("Parameters", "ItemSelector", "ResultSelector"):
        if name in state:
            _check_template(state[name], f"{where}.{name}")
    for name in ("ErrorPath", "CausePath"):
        if name in state:
            _check_expression(state[name], f"{where}.{name}")


def _check_template(template: Any, where: str) -> None:
    if isinstance(template, Mapping):
        for key, value in template.items():
            if key.endswith(".$"):
                _check_expression(value, f"{where}.{key}")
            else:
                _check_template(value, f"{where}.{key}")
    elif isinstance(template, list):
        for index, item in enumerate(template):
            _check_template(item, f"{where}[{index}]")


def _check_expression(value: Any, where: str) -> None:
    if not isinstance(value, str):
        _fail(where, "must be a path ($...) or an intrinsic function (States....)")
    try:
        if value.startswith("$"):
            _check_path(value, where, nullable=False)
        else:
            _parse_intrinsic(value)
    except _SyntaxProblem as exc:
        _fail(where, str(exc))


def _check_error_equals(node: Mapping[str, Any], where: str, last: bool) -> None:
    names = node.get("ErrorEquals")
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        _fail(f"{where}.ErrorEquals", "must be a non-empty list of error names")
    if ALL in names and (len(names) > 1 or not last):
        _fail(f"{where}.ErrorEquals", "States.ALL must appear alone, in the last retrier/catcher")


def _check_retrier(retrier: Any, where: str, last: bool) -> None:
    if not isinstance(retrier, Mapping):
        _fail(where, "a retrier is an object")
    _check_fields(retrier, _RETRIER_FIELDS, where)
    _check_error_equals(retrier, where, last)
    checks = {
        "IntervalSeconds": _positive_int,
        "MaxAttempts": lambda v: _is_int(v) and v >= 0,
        "BackoffRate": lambda v: _is_number(v) and v >= 1.0,
        "MaxDelaySeconds": _positive_int,
        "JitterStrategy": lambda v: v in ("FULL", "NONE"),
    }
    for name, check in checks.items():
        if name in retrier and not check(retrier[name]):
            _fail(f"{where}.{name}", f"invalid value {retrier[name]!r}")


def _check_catcher(catcher: Any, states: Mapping[str, Any], where: str, last: bool) -> None:
    if not isinstance(catcher, Mapping):
        _fail(where, "a catcher is an object")
    _check_fields(catcher, _CATCHER_FIELDS, where)
    _check_error_equals(catcher, where, last)
    if not _known(states, catcher.get("Next")):
        _fail(f"{where}.Next", f"unknown state {catcher.get('Next')!r}", UnknownStateError)
    if "ResultPath" in catcher:
        _check_path(catcher["ResultPath"], f"{where}.ResultPath", result=True)


def _check_task(
    state: Mapping[str, Any], _states: Any, where: str, resources: Mapping[str, Handler] | None
) -> None:
    resource = state.get("Resource")
    if not isinstance(resource, str) or not resource:
        _fail(f"{where}.Resource", "a Task needs a Resource")
    if "TimeoutSeconds" in state and "TimeoutSecondsPath" in state:
        _fail(where, "TimeoutSeconds and TimeoutSecondsPath are exclusive")
    if "TimeoutSeconds" in state and not _positive_int(state["TimeoutSeconds"]):
        _fail(f"{where}.TimeoutSeconds", "must be a positive integer")
    target = resource
    if resources is None or resource in resources:
        return
    if _LAMBDA_INVOKE.fullmatch(resource):
        parameters = state.get("Parameters")
        if not isinstance(parameters, Mapping) or not ({"FunctionName", "FunctionName.$"} & set(parameters)):
            _fail(f"{where}.Parameters", "lambda:invoke needs Parameters.FunctionName")
        if "FunctionName" not in parameters:
            return  # chosen at run time
        target = parameters["FunctionName"]
    if _lookup(resources, target) is None:
        _fail(f"{where}.Resource", f"no handler registered for {target!r}", UnknownResourceError)


def _check_pass(state: Mapping[str, Any], _states: Any, where: str, _resources: Any) -> None:
    return None


def _check_choice(state: Mapping[str, Any], states: Mapping[str, Any], where: str, _resources: Any) -> None:
    choices = state.get("Choices")
    if not isinstance(choices, list) or not choices:
        _fail(f"{where}.Choices", "must be a non-empty list of rules")
    for index, rule in enumerate(choices):
        _check_rule(rule, f"{where}.Choices[{index}]", top=True)
        if not _known(states, rule["Next"]):
            _fail(f"{where}.Choices[{index}].Next", f"unknown state {rule['Next']!r}", UnknownStateError)
    if "Default" in state and not _known(states, state["Default"]):
        _fail(f"{where}.Default", f"unknown state {state['Default']!r}", UnknownStateError)


def _check_rule(rule: Any, where: str, top: bool) -> None:
    if not isinstance(rule, Mapping):
        _fail(where, "a choice rule is an object")
    operators = [key for key in rule if key in _OPERATORS]
    if len(operators) != 1:
        _fail(where, f"needs exactly one comparison operator, found {operators}")
    operator = operators[0]
    allowed = {operator, "Comment"} | ({"Next"} if top else set())
    allowed |= set() if operator in ("And", "Or", "Not") else {"Variable"}
    _check_fields(rule, frozenset(allowed), where)
    if top and "Next" not in rule:
        _fail(where, "a top-level choice rule needs Next", MissingTransitionError)
    value = rule[operator]
    if operator in ("And", "Or"):
        if not isinstance(value, list) or not value:
            _fail(f"{where}.{operator}", "must be a non-empty list of rules")
        for index, sub in enumerate(value):
            _check_rule(sub, f"{where}.{operator}[{index}]", top=False)
        return
    if operator == "Not":
        _check_rule(value, f"{where}.Not", top=False)
        return
    _check_path(rule.get("Variable"), f"{where}.Variable", nullable=False)
    _check_operand(operator, value, f"{where}.{operator}")


def _check_operand(operator: str, value: Any, where: str) -> None:
    if operator.endswith("Path"):
        _check_path(value, where, nullable=False)
    elif operator in _TYPE_TESTS or operator in ("IsPresent", "BooleanEquals"):
        if not isinstance(value, bool):
            _fail(where, "must be true or false")
    elif operator.startswith("Numeric"):
        if not _is_number(value):
            _fail(where, "must be a number")
    elif operator.startswith("Timestamp"):
        if _parse_timestamp(value) is None:
            _fail(where, "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z")
    elif not isinstance(value, str):
        _fail(where, "must be a string")


def _check_wait(state: Mapping[str, Any], _states: Any, where: str, _resources: Any) -> None:
    present = [name for name in _WAIT_FIELDS if name in state]
    if len(present) != 1:
        _fail(where, f"needs exactly one of {', '.join(_WAIT_FIELDS)}")
    if "Seconds" in state and not (_is_int(state["Seconds"]) and state["Seconds"] >= 0):
        _fail(f"{where}.Seconds", "must be a non-negative integer")
    if "Timestamp" in state and _parse_timestamp(state["Timestamp"]) is None:
        _fail(f"{where}.Timestamp", "must be an RFC 3339 timestamp")


def _check_succeed(state: Mapping[str, Any], _states: Any, where: str, _resources: Any) -> None:
    return None


def _check_fail(state: Mapping[str, Any], _states: Any, where: str, _resources: Any) -> None:
    for name in ("Error", "Cause"):
        if name in state and f"{name}Path" in state:
            _fail(where, f"{name} and {name}Path are exclusive")
        if name in state and not isinstance(state[name], str):
            _fail(f"{where}.{name}", "must be a string")


def _check_parallel(
    state: Mapping[str, Any], _states: Any, where: str, resources: Mapping[str, Handler] | None
) -> None:
    branches = state.get("Branches")
    if not isinstance(branches, list) or not branches:
        _fail(f"{where}.Branches", "must be a non-empty list of state machines")
    for index, branch in enumerate(branches):
        _check_machine(
            branch, f"{where}.Branches[{index}]", resources, frozenset({"StartAt", "States", "Comment"})
        )


def _check_map(
    state: Mapping[str, Any], _states: Any, where: str, resources: Mapping[str, Handler] | None
) -> None:
    if ("Iterator" in state) == ("ItemProcessor" in state):
        _fail(where, "needs exactly one of ItemProcessor or Iterator")
    if "ItemSelector" in state and "Parameters" in state:
        _fail(where, "ItemSelector and Parameters are exclusive")
    if "MaxConcurrency" in state and not (_is_int(state["MaxConcurrency"]) and state["MaxConcurrency"] >= 0):
        _fail(f"{where}.MaxConcurrency", "must be a non-negative integer")
    name = "ItemProcessor" if "ItemProcessor" in state else "Iterator"
    processor = state[name]
    allowed = frozenset({"StartAt", "States", "Comment", "ProcessorConfig"})
    _check_machine(processor, f"{where}.{name}", resources, allowed)
    config = processor.get("ProcessorConfig", {})
    if not isinstance(config, Mapping) or config.get("Mode", "INLINE") != "INLINE":
        _fail(f"{where}.{name}.ProcessorConfig", "only INLINE Map is supported", UnsupportedFeatureError)


_TYPE_CHECKS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any], str, Any], None]] = {
    "Task": _check_task,
    "Pass": _check_pass,
    "Choice": _check_choice,
    "Wait": _check_wait,
    "Succeed": _check_succeed,
    "Fail": _check_fail,
    "Parallel": _check_parallel,
    "Map": _check_map,
}


def _successors(state: Mapping[str, Any]) -> list[str]:
    targets = [state.get("Next"), state.get("Default")]
    targets += [rule.get("Next") for rule in state.get("Choices", [])]
    targets += [catcher.get("Next") for catcher in state.get("Catch", [])]
    return [target for target in targets if isinstance(target, str)]


def _check_reachable(machine: Mapping[str, Any], where: str) -> None:
    states, seen, todo = machine["States"], set(), [machine["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_successors(states[name]))
    for name in states:
        if name not in seen:
            _fail(f"{where}.States.{name}", "is not reachable from StartAt", UnreachableStateError)


# --- the interpreter ---------------------------------------------------------------------
@dataclass
class _Abort:
    """A cancellation flag shared by sibling branches/iterations, chained to the parent's."""

    parent: _Abort | None = None
    flag: threading.Event = field(default_factory=threading.Event)

    def set(self) -> None:
        self.flag.set()

    def is_set(self) -> bool:
        return self.flag.is_set() or (self.parent is not None and self.parent.is_set())


@dataclass(frozen=True)
class _Frame:
    """Where a state runs: its scope in the history, and the abort flag it obeys."""

    scope: Scope
    abort: _Abort


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Runner:
    """One execution: the injected clocks, the resources and the shared history."""

    def __init__(
        self,
        resources: Mapping[str, Handler],
        sleep: Callable[[float], object],
        clock: Callable[[], float],
        now: Callable[[], datetime],
        max_steps: int,
        context: dict[str, Any],
        deadline: float | None,
    ) -> None:
        self.resources = resources
        self.sleep = sleep
        self.clock = clock
        self.now = now
        self.max_steps = max_steps
        self.context = context
        self.deadline = deadline
        self.history: list[Event] = []
        self._lock = threading.Lock()
        self._steps = 0

    # history and limits
    def emit(self, kind: EventType, state: str | None, scope: Scope, **data: Any) -> float:
        with self._lock:
            stamp = self.clock()
            self.history.append(Event(kind, stamp, state, scope, data))
        return stamp

    def _step(self, frame: _Frame) -> None:
        if frame.abort.is_set():
            raise _Aborted()
        if self.deadline is not None and self.clock() > self.deadline:
            raise _TimedOut()
        with self._lock:
            self._steps += 1
            steps = self._steps
        if steps > self.max_steps:
            raise _StatesError(RUNTIME, f"more than max_steps={self.max_steps} state transitions")

    def _state_context(
        self, name: str, retries: int, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        state = {"Name": name, "EnteredTime": _iso(self.now()), "RetryCount": retries}
        return {**self.context, "State": state, **(extra or {})}

    # machines and states
    def run_machine(self, machine: Mapping[str, Any], data: Any, frame: _Frame) -> Any:
        """Run from StartAt until a terminal state; return its output or raise _StatesError."""
        name: str | None = machine["StartAt"]
        while name is not None:
            self._step(frame)
            data, name = self._run_state(name, machine["States"][name], data, frame)
        return data

    def _run_state(
        self, name: str, state: Mapping[str, Any], data: Any, frame: _Frame
    ) -> tuple[Any, str | None]:
        entered = self.emit(EventType.STATE_ENTERED, name, frame.scope, input=data, type=state["Type"])
        try:
            output, following, status = self._guarded(name, state, data, frame)
        except _StatesError as err:
            self._exited(name, frame, entered, status="failed", error=err.error, cause=err.cause)
            raise
        except (_Aborted, _TimedOut):
            self._exited(name, frame, entered, status="aborted")
            raise
        self._exited(name, frame, entered, status=status, output=output, next=following)
        return output, following

    def _exited(self, name: str, frame: _Frame, entered: float, **data: Any) -> None:
        with self._lock:
            stamp = self.clock()
            data.update(entered=entered, duration=stamp - entered)
            self.history.append(Event(EventType.STATE_EXITED, stamp, name, frame.scope, data))

    def _guarded(
        self, name: str, state: Mapping[str, Any], raw: Any, frame: _Frame
    ) -> tuple[Any, str | None, str]:
        """Run one state, applying its Retry and Catch policies; return (output, next, status)."""
        retriers = state.get("Retry", [])
        attempts = [0] * len(retriers)
        retries = 0
        while True:
            context = self._state_context(name, retries)
            try:
                output, following = _STATE_RUNNERS[state["Type"]](self, name, state, raw, context, frame)
                return output, following, "succeeded"
            except _StatesError as exc:
                err = exc
            self.emit(EventType.STATE_FAILED, name, frame.scope, error=err.error, cause=err.cause)
            delay = _retry_delay(retriers, attempts, err.error)
            if delay is None:
                output, following = self._catch(name, state, raw, frame, err)
                return output, following, "caught"
            retries += 1
            self.emit(
                EventType.RETRY_SCHEDULED, name, frame.scope, error=err.error, attempt=retries, delay=delay
            )
            self.sleep(delay)
            if frame.abort.is_set():
                raise _Aborted()

    def _catch(
        self, name: str, state: Mapping[str, Any], raw: Any, frame: _Frame, err: _StatesError
    ) -> tuple[Any, str]:
        for catcher in state.get("Catch", []):
            if _error_matches(catcher["ErrorEquals"], err.error):
                output = _apply_result_path(catcher, raw, {"Error": err.error, "Cause": err.cause})
                self.emit(
                    EventType.ERROR_CAUGHT,
                    name,
                    frame.scope,
                    error=err.error,
                    cause=err.cause,
                    next=catcher["Next"],
                )
                return output, catcher["Next"]
        raise err

    # concurrency
    def fan_out(
        self, jobs: Sequence[tuple[Mapping[str, Any], Any, Scope]], workers: int, frame: _Frame
    ) -> list[Any]:
        """Run sub-machines concurrently; all outputs in order, or the first failure.

        When one job fails, the others stop at their next state boundary (or after the
        sleep of a Wait state or a retry); jobs not yet started do not run.
        """
        if not jobs:
            return []
        abort = _Abort(parent=frame.abort)
        with ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="asl"
        ) as pool:
            futures = [
                pool.submit(self._run_job, machine, data, _Frame(scope, abort))
                for machine, data, scope in jobs
            ]
            failure = _first_failure(futures, abort)
        if failure is not None:
            raise failure
        return [future.result() for future in futures]

    def _run_job(self, machine: Mapping[str, Any], data: Any, frame: _Frame) -> Any:
        """One branch or iteration; a failure raises the shared abort flag at once."""
        try:
            return self.run_machine(machine, data, frame)
        except BaseException:
            frame.abort.set()
            raise

    # tasks
    def invoke(self, state: Mapping[str, Any], payload: Any, effective: Any, context: Any) -> Any:
        """Call the Task's handler with ``payload``; return its (JSON) result."""
        resource = state["Resource"]
        wrap = _is_lambda_invoke(resource, self.resources)
        target = resource
        if wrap:
            if not isinstance(payload, dict) or not isinstance(payload.get("FunctionName"), str):
                raise _StatesError(RUNTIME, "lambda:invoke needs Parameters.FunctionName")
            target, payload = payload["FunctionName"], payload.get("Payload", {})
        handler = _lookup(self.resources, target)
        if handler is None:
            raise _StatesError(FUNCTION_NOT_FOUND, f"Function not found: {target}")
        try:
            argument = _json_copy(payload)
        except (TypeError, ValueError) as exc:
            raise _StatesError(RUNTIME, f"task input is not JSON: {exc}") from None
        result = _call_handler(handler, argument, _task_timeout(state, effective, context))
        return _lambda_response(result) if wrap else result


def _first_failure(futures: Sequence[Future[Any]], abort: _Abort) -> BaseException | None:
    """The first exception to complete (aborting the siblings), or None."""
    failure: BaseException | None = None
    for future in as_completed(futures):
        error = future.exception()
        if error is None:
            continue
        if failure is None or (isinstance(failure, _Aborted) and not isinstance(error, _Aborted)):
            failure = error
        abort.set()
    return failure


def _task_timeout(state: Mapping[str, Any], effective: Any, context: Any) -> float | None:
    if "TimeoutSecondsPath" in state:
        value = _resolve(state["TimeoutSecondsPath"], effective, context)
        if not _positive_int(value):
            raise _StatesError(RUNTIME, f"TimeoutSecondsPath gave {value!r}, not a positive integer")
        return float(value)
    return float(state["TimeoutSeconds"]) if "TimeoutSeconds" in state else None


def _call_handler(handler: Handler, argument: Any, timeout: float | None) -> Any:
    """Run a handler (in a worker thread when there is a timeout) and map its errors."""
    if timeout is None:
        return _guarded_call(handler, argument)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = _guarded_call(handler, argument)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name="asl-task", daemon=True).start()
    if not done.wait(timeout):
        raise _StatesError(TIMEOUT, f"Task timed out after {timeout:g} seconds")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _guarded_call(handler: Handler, argument: Any) -> Any:
    try:
        result = handler(argument)
    except TaskFailed as exc:
        raise _StatesError(exc.error, exc.cause) from exc
    except Exception as exc:
        raise _StatesError(type(exc).__name__, str(exc)) from exc
    try:
        return _json_copy(result)
    except (TypeError, ValueError) as exc:
        raise _StatesError(MARSHAL_ERROR, f"Unable to marshal response: {exc}") from None


# --- input/output processing ----------------------------------------------------------
def _apply_input_path(state: Mapping[str, Any], raw: Any, context: Any) -> Any:
    if "InputPath" in state and state["InputPath"] is None:
        return {}
    return _resolve(state.get("InputPath", "$"), raw, context)


def _apply_parameters(state: Mapping[str, Any], effective: Any, context: Any) -> Any:
    if "Parameters" not in state:
        return effective
    return _render(state["Parameters"], effective, context)


def _apply_result_path(node: Mapping[str, Any], raw: Any, result: Any) -> Any:
    """ResultPath (on a state or a catcher): where the result goes in the *raw* input."""
    if "ResultPath" in node and node["ResultPath"] is None:
        return raw
    return _write(raw, node.get("ResultPath", "$"), result)


def _apply_output_path(state: Mapping[str, Any], data: Any, context: Any) -> Any:
    if "OutputPath" in state and state["OutputPath"] is None:
        return {}
    return _resolve(state.get("OutputPath", "$"), data, context)


def _finish(state: Mapping[str, Any], raw: Any, result: Any, context: Any) -> Any:
    """ResultSelector → ResultPath → OutputPath, in that order."""
    if "ResultSelector" in state:
        result = _render(state["ResultSelector"], result, context)
    return _apply_output_path(state, _apply_result_path(state, raw, result), context)


# --- state types ---------------------------------------------------------------------------
StateOutcome = tuple[Any, str | None]


def _run_task(
    runner: _Runner, name: str, state: Mapping[str, Any], raw: Any, context: Any, frame: _Frame
) -> StateOutcome:
    effective = _apply_input_path(state, raw, context)
    payload = _apply_parameters(state, effective, context)
    result = runner.invoke(state, payload, effective, context)
    return _finish(state, raw, result, context), state.get("Next")


def _run_pass(
    runner: _Runner, name: str, state: Mapping[str, Any], raw: Any, context: Any, frame: _Frame
) -> StateOutcome:
    effective = _apply_input_path(state, raw, context)
    if "Result" in state:
        result = copy.deepcopy(state["Result"])
    else:
        result = _apply_parameters(state, effective, context)
    return _finish(state, raw, result, context), state.get("Next")


def _run_choice(
    runner: _Runner, name: str, state: Mapping[str, Any], raw: Any, context: Any, frame: _Frame
) -> StateOutcome:
    effective = _apply_input_path(state, raw, context)
    following = next(
        (rule["Next"] for rule in state["Choices"] if _rule_matches(rule, effective, context)),
        state.get("Default"),
    )
    if following is None:
        raise _StatesError(NO_CHOICE_MATCHED, f"No Choice rule matched and no Default in state '{name}'")
    return _apply_output_path(state, effective, context), following


def _run_wait(
    runner: _Runner, name: str, state: Mapping[str, Any], raw: Any, context: Any, frame: _Frame
) -> StateOutcome:
    effective = _apply_input_path(state, raw, context)
    runner.sleep(_wait_seconds(runner, state, effective, context))
    if frame.abort.is_set():
        raise _Aborted()
    return _apply_output_path(state, effective, context), state.get("Next")


def _wait_seconds(runner: _Runner, state: Mapping[str, Any], effective: Any, context: Any) -> float:
    if "Seconds" in state:
        return float(state["Seconds"])
    if "SecondsPath" in state:
        seconds = _resolve(state["SecondsPath"], effective, context)
        if not (_is_int(seconds) and seconds >= 0):
            raise _StatesError(RUNTIME, f"SecondsPath gave {seconds!r}, not a non-negative integer")
        return float(seconds)
    text = (
        state["Timestamp"] if "Timestamp" in state else _resolve(state["TimestampPath"], effective, context)
    )
    moment = _parse_timestamp(text)
    if moment is None:
        raise _StatesError(RUNTIME, f"{text!r} is not an RFC 3339 timestamp")
    return max(0.0, (moment - runner.now()).total_seconds())


def _run_succeed(
    runner: _Runner, name: str, state: Mapping[str, Any], raw: Any, context: Any, frame: _Frame
) -> StateOutcome:
    effective = _apply_input_path(state, raw, context)
    return _apply_output_path(state, effective, context), None


def _run_fail(
    runner: _Runner, name: str, state: Mapping[str, Any], raw: Any, context: Any, frame: _Frame
) -> StateOutcome:
    error, cause = state.get("Error", ""), state.get("Cause", "")
    if "ErrorPath" in state:
        error = _fail_text(state["ErrorPath"], raw, context)
    if "CausePath" in state:
        cause = _fail_text(state["CausePath"], raw, context)
    raise _StatesError(error, cause)


def _fail_text(expression: str, raw: Any, context: Any) -> str:
    value = _evaluate(expression, raw, context)
    if not isinstance(value, str):
        raise _StatesError(RUNTIME, f"{expression} gave {value!r}, not a string")
    return value


def _run_parallel(
    runner: _Runner, name: str, state: Mapping[str, Any], raw: Any, context: Any, frame: _Frame
) -> StateOutcome:
    effective = _apply_input_path(state, raw, context)
    branch_input = _apply_parameters(state, effective, context)
    jobs = [
        (branch, branch_input, (*frame.scope, name, index)) for index, branch in enumerate(state["Branches"])
    ]
    results = runner.fan_out(jobs, len(jobs), frame)
    return _finish(state, raw, results, context), state.get("Next")


def _run_map(
    runner: _Runner, name: str, state: Mapping[str, Any], raw: Any, context: Any, frame: _Frame
) -> StateOutcome:
    effective = _apply_input_path(state, raw, context)
    items = _resolve(state.get("ItemsPath", "$"), effective, context)
    if not isinstance(items, list):
        raise _StatesError(RUNTIME, f"ItemsPath of state '{name}' gave {_short(items)}, not an array")
    selector = state.get("ItemSelector", state.get("Parameters"))
    processor = state.get("ItemProcessor") or state["Iterator"]
    jobs = []
    for index, item in enumerate(items):
        item_context = {**context, "Map": {"Item": {"Index": index, "Value": item}}}
        item_input = item if selector is None else _render(selector, effective, item_context)
        jobs.append((processor, item_input, (*frame.scope, name, index)))
    results = runner.fan_out(jobs, _map_concurrency(state, effective, context), frame)
    return _finish(state, raw, results, context), state.get("Next")


def _map_concurrency(state: Mapping[str, Any], effective: Any, context: Any) -> int:
    limit = state.get("MaxConcurrency", 0)
    if "MaxConcurrencyPath" in state:
        limit = _resolve(state["MaxConcurrencyPath"], effective, context)
        if not (_is_int(limit) and limit >= 0):
            raise _StatesError(RUNTIME, f"MaxConcurrencyPath gave {limit!r}, not a non-negative integer")
    return int(limit) or MAP_CONCURRENCY_LIMIT


_STATE_RUNNERS: dict[str, Callable[[_Runner, str, Mapping[str, Any], Any, Any, _Frame], StateOutcome]] = {
    "Task": _run_task,
    "Pass": _run_pass,
    "Choice": _run_choice,
    "Wait": _run_wait,
    "Succeed": _run_succeed,
    "Fail": _run_fail,
    "Parallel": _run_parallel,
    "Map": _run_map,
}


# --- entry point ---------------------------------------------------------------------------
def _utc_now() -> datetime:
    return datetime.now(UTC)


def run_state_machine(
    definition: Mapping[str, Any] | str,
    input: Any,
    *,
    resources: Mapping[str, Handler],
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = _utc_now,
    max_steps: int = 10_000,
    execution_name: str | None = None,
    state_machine_name: str = "local",
) -> Execution:
    """Run an ASL definition to completion in this process and report the outcome.

    ``resources`` maps Task targets to handlers ``f(input) -> result``: a Task's
    ``Resource`` is looked up as written, then as a Lambda function name (so
    ``arn:aws:lambda:...:function:NAME`` and ``lambda:invoke`` with
    ``Parameters.FunctionName`` both find ``NAME``). ``lambda:invoke`` passes
    ``Parameters.Payload`` to the handler and returns
    ``{"ExecutedVersion", "Payload", "StatusCode"}`` as the integration does.

    Raises InvalidDefinitionError (before running anything) for a bad definition and
    TypeError/ValueError for an input that is not JSON. Failures *of* the execution are
    not raised: they come back as ``status`` FAILED (or TIMED_OUT) with ``error``/``cause``.
    ``max_steps`` bounds state transitions across all branches (a runaway loop fails
    with ``States.Runtime``).
    """
    machine = validate_definition(definition, resources)
    data = _json_copy(input)
    name = execution_name or str(uuid.uuid4())
    started = clock()
    context = {
        "Execution": {
            "Id": f"arn:aws:states:local:000000000000:execution:{state_machine_name}:{name}",
            "Input": data,
            "Name": name,
            "RoleArn": "arn:aws:iam::000000000000:role/lifeboat-local",
            "StartTime": _iso(now()),
        },
        "StateMachine": {
            "Id": f"arn:aws:states:local:000000000000:stateMachine:{state_machine_name}",
            "Name": state_machine_name,
        },
    }
    deadline = started + machine["TimeoutSeconds"] if "TimeoutSeconds" in machine else None
    runner = _Runner(resources, sleep, clock, now, max_steps, context, deadline)
    runner.emit(EventType.EXECUTION_STARTED, None, (), input=data)
    return _conclude(runner, machine, data)


def _conclude(runner: _Runner, machine: Mapping[str, Any], data: Any) -> Execution:
    try:
        output = runner.run_machine(machine, data, _Frame((), _Abort()))
    except _StatesError as err:
        runner.emit(EventType.EXECUTION_FAILED, None, (), error=err.error, cause=err.cause)
        return Execution(ExecutionStatus.FAILED, None, err.error or None, err.cause or None, runner.history)
    except _TimedOut:
        cause = "The execution exceeded the state machine's TimeoutSeconds"
        runner.emit(EventType.EXECUTION_TIMED_OUT, None, (), error=TIMEOUT, cause=cause)
        return Execution(ExecutionStatus.TIMED_OUT, None, TIMEOUT, cause, runner.history)
    runner.emit(EventType.EXECUTION_SUCCEEDED, None, (), output=output)
    return Execution(ExecutionStatus.SUCCEEDED, output, None, None, runner.history)
