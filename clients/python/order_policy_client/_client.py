"""``Client``: one gRPC channel to order-policy with the defaults a caller would otherwise get wrong.

Every call has a deadline (``timeout``, 5 s unless told). The channel uses the service config in
``service_config.json``: ``round_robin`` over every address the target resolves to (a headless
Kubernetes Service gives one per pod) and, decisions being free of side effects, up to 5
attempts on ``UNAVAILABLE`` while waiting for a ready server within the deadline, so a replica
restarting or going away is not seen by the caller. Keepalive pings find dead connections.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from order_policy_client._convert import (
    JsonInput,
    Request,
    decision_from,
    error_from_item,
    error_from_rpc,
    request_message,
)
from order_policy_client._errors import OrderPolicyError
from order_policy_client._gen.orderpolicy.v1 import order_policy_pb2 as pb
from order_policy_client._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from order_policy_client._results import Decision

__all__ = ["DEFAULT_TIMEOUT", "SERVICE_CONFIG", "Client", "channel_options", "normalize_target"]

DEFAULT_TIMEOUT = 5.0
SERVICE_CONFIG: dict[str, Any] = json.loads(
    resources.files("order_policy_client").joinpath("service_config.json").read_text()
)
# Keepalive as often as a gRPC server accepts by default (one ping per 5 minutes without data).
KEEPALIVE_TIME_MS = 300_000
KEEPALIVE_TIMEOUT_MS = 20_000
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")

Result = Decision | OrderPolicyError


def normalize_target(target: str) -> str:
    """``host:port`` as ``dns:///host:port`` (every address of the name is used); targets with a scheme as is."""
    target = target.strip()
    if not target:
        raise ValueError("empty target: give `host:port`, `dns:///host:port` or `ipv4:a:p,b:p`")
    return target if target.startswith(_SCHEMES) else f"dns:///{target}"


def channel_options(retry: bool = True, service_config: Mapping[str, Any] | None = None) -> list[tuple[str, Any]]:
    """The channel arguments of a :class:`Client` (also for callers who make their own channel)."""
    config = copy.deepcopy(dict(service_config or SERVICE_CONFIG))
    if not retry:
        for method in config.get("methodConfig", []):
            method.pop("retryPolicy", None)
    return [
        ("grpc.service_config", json.dumps(config)),
        ("grpc.service_config_disable_resolution", 1),  # ours, never one from DNS TXT records
        ("grpc.enable_retries", 1 if retry else 0),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.initial_reconnect_backoff_ms", 200),  # a restarted replica is used again quickly
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]


class Client:
    """A client of ``orderpolicy.v1.OrderPolicyService``; thread-safe; close it (or use ``with``).

    ``target``: ``host:port`` (resolved by DNS, every address used), ``dns:///name:port``,
    ``ipv4:10.0.0.1:50051,10.0.0.2:50051``, ``unix:/path``. ``tls``: True for TLS with the
    system's roots, or ``grpc.ssl_channel_credentials(...)`` (mTLS: with a key and chain).
    ``retry=False`` turns retries off. ``metadata`` is sent with every call.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: bool | grpc.ChannelCredentials = False,
        retry: bool = True,
        service_config: Mapping[str, Any] | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got `{timeout}`")
        self.target = normalize_target(target)
        self.timeout = float(timeout)
        self._metadata = tuple(metadata)
        opts = [*channel_options(retry, service_config), *options]
        if tls is False:
            self._channel = grpc.insecure_channel(self.target, options=opts)
        else:
            creds = grpc.ssl_channel_credentials() if tls is True else tls
            self._channel = grpc.secure_channel(self.target, creds, options=opts)
        # The generated stub has no annotations (grpcio-tools writes .pyi files for messages only).
        self._stub = pb_grpc.OrderPolicyServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = self._channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            # HealthCheckRequest {string service = 1} and HealthCheckResponse {enum status = 1} have the
            # wire format of StringValue and Int32Value: no extra package needed.
            request_serializer=wrappers_pb2.StringValue.SerializeToString,
            response_deserializer=wrappers_pb2.Int32Value.FromString,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def decide(
        self,
        order: JsonInput,
        appointment: JsonInput | None = None,
        action: str = "cancel_order",
        now: dt.datetime | str | None = None,
        bundle_revision: str | None = None,
        *,
        explain: bool = False,
        request_id: str = "",
        timeout: float | None = None,
    ) -> Decision:
        """Decide one request; raises :class:`InvalidArgument` (with ``field_violations``),
        :class:`Unavailable`, :class:`DeadlineExceeded` or another :class:`OrderPolicyError`."""
        request = request_message(Request(order, appointment, action, now, bundle_revision or "", explain, request_id))
        try:
            reply = self._stub.Decide(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return decision_from(reply.decision, reply.request_id)

    def decide_batch(
        self,
        requests: Iterable[Request | Mapping[str, Any]],
        *,
        timeout: float | None = None,
    ) -> list[Result]:
        """Decide many requests in one call: one result per request, in order. An item that is
        invalid (found by the client or the service) is its :class:`OrderPolicyError`, returned
        in its place, not raised."""
        slots: list[OrderPolicyError | None] = []
        messages = list(_messages(requests, slots))
        try:
            reply = self._stub.DecideBatch(
                pb.DecideBatchRequest(requests=messages), timeout=self._timeout(timeout), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        answers = iter(reply.results)
        return [_result(next(answers)) if slot is None else slot for slot in slots]

    def decide_stream(
        self,
        requests: Iterable[Request | Mapping[str, Any]],
        *,
        timeout: float | None = None,
    ) -> Iterator[Result]:
        """Decide requests over one ``DecideStream`` as they come: one result per request, in
        order, invalid ones as their :class:`OrderPolicyError`. The deadline covers the whole stream."""
        # One slot per request in order: None for a request sent, or the error found before
        # sending. The request iterator runs on gRPC's thread; deque appends and pops are thread-safe.
        slots: collections.deque[OrderPolicyError | None] = collections.deque()
        wrapped = (pb.DecideStreamRequest(request=m) for m in _messages(requests, slots))
        call = self._stub.DecideStream(wrapped, timeout=self._timeout(timeout), metadata=self._metadata)
        try:
            for reply in call:
                while slots and slots[0] is not None:
                    yield slots.popleft()  # type: ignore[misc]
                if slots:
                    slots.popleft()
                yield _result(reply)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()
        yield from (slot for slot in slots if slot is not None)

    def health(self, *, timeout: float | None = None) -> str:
        """The server's ``grpc.health.v1`` status: ``SERVING`` once it has a bundle, else ``NOT_SERVING``."""
        try:
            reply = self._health(wrappers_pb2.StringValue(), timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(reply.value, "UNKNOWN")


def _messages(
    requests: Iterable[Request | Mapping[str, Any]],
    slots: collections.deque[OrderPolicyError | None] | list[OrderPolicyError | None],
) -> Iterator[pb.DecideRequest]:
    """The messages of the requests that can be sent; a slot per request (None: sent, else its error)."""
    for raw in requests:
        try:
            message = request_message(_request(raw))
        except OrderPolicyError as exc:
            slots.append(exc)
            continue
        slots.append(None)
        yield message


def _request(raw: Request | Mapping[str, Any]) -> Request:
    if isinstance(raw, Request):
        return raw
    if isinstance(raw, Mapping):
        return Request(**raw)
    raise TypeError(f"a request is a Request or a mapping of its fields, not {type(raw).__name__}")


def _result(reply: pb.DecideResult | pb.DecideStreamResponse) -> Result:
    if reply.HasField("error"):
        return error_from_item(reply.error)
    return decision_from(reply.decision, reply.request_id)
