"""Request bytes -> messages, where protobuf refuses them: which field, and why.

protobuf refuses a message whose ``string`` field (``order_json`` above all) holds
bytes that are not UTF-8, and gRPC then answers ``INTERNAL "Exception deserializing
request!"`` without the service ever seeing the call. The deserializers here wrap
``FromString``: on the hot path they cost one Python call; only a message protobuf
refuses is walked at the wire level to name the offending field
(``order_json``, ``requests[3].appointment_json``, ``order.events[0].status``), and
the servicer gets an :class:`UndecodableRequest` to answer ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf.message import DecodeError

__all__ = ["UndecodableRequest", "add_servicer", "deserializer", "undecodable"]

_STRING = _descriptor.FieldDescriptor.TYPE_STRING
_MESSAGE = _descriptor.FieldDescriptor.TYPE_MESSAGE


class UndecodableRequest:
    """A request message protobuf could not decode: the field at fault (or "") and why."""

    __slots__ = ("field", "message")

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _first_bad_text(data: bytes, message: Any, prefix: str) -> str | None:
    """The path of the first ``string`` field of ``message`` (a descriptor) that is not UTF-8."""
    counts: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            chunk = data[pos : pos + size]
            pos += size
            field = message.fields_by_number.get(number)
            if field is None:
                continue
            name = prefix + field.name
            if field.is_repeated:
                counts[number] = counts.get(number, 0) + 1
                name = f"{name}[{counts[number] - 1}]"
            if field.type == _STRING:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return name
            elif field.type == _MESSAGE:
                found = _first_bad_text(chunk, field.message_type, name + ".")
                if found is not None:
                    return found
        else:
            raise ValueError(f"wire type {wire}")
    return None


def undecodable(data: bytes, message: Any, strip: str = "") -> UndecodableRequest:
    """Why protobuf refused ``data`` as a ``message`` (a descriptor); ``strip`` drops a path prefix."""
    try:
        field = _first_bad_text(data, message, "")
    except Exception:
        field = None
    if field is None:
        return UndecodableRequest("", f"the request is not a valid `{message.full_name}` message")
    if strip and field.startswith(strip):
        field = field[len(strip) :]
    return UndecodableRequest(field, "is not valid UTF-8 text: a string field must hold UTF-8")


def deserializer(cls: Any, strip: str = "") -> Callable[[bytes], Any]:
    """``cls.FromString``, or an :class:`UndecodableRequest` saying which field was at fault."""
    from_string = cls.FromString
    descriptor = cls.DESCRIPTOR

    def decode(data: bytes) -> Any:
        try:
            return from_string(data)
        except DecodeError:
            return undecodable(data, descriptor, strip)

    return decode


def add_servicer(
    service: Any, servicer: Any, server: grpc.Server, requests: dict[str, tuple[Any, Any, bool, str]]
) -> None:
    """Register ``servicer`` for ``service`` (a service descriptor) with these deserializers.

    ``requests``: method name -> (request class, response class, streaming, path prefix
    dropped from field names), as the generated ``add_..._to_server`` would, but decoding
    through :func:`deserializer`.
    """
    handlers = {}
    for name, (request, response, streaming, strip) in requests.items():
        make = grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        handlers[name] = make(
            getattr(servicer, name),
            request_deserializer=deserializer(request, strip),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
