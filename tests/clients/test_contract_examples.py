"""The grpcurl-style JSON examples of protos/examples, sent the way grpcurl sends them: the
descriptors come from the server's reflection service, the JSON is parsed into them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.support.bundles import ROOT

EXAMPLES = ROOT / "protos" / "examples"
SERVICE = "orderpolicy.v1.OrderPolicyService"


@pytest.fixture(scope="module")
def call(server_address: str) -> Iterator[Any]:
    """Call a method of the service with an example's JSON, as grpcurl does through reflection."""
    with grpc.insecure_channel(server_address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName(SERVICE)

        def invoke(method_name: str, example: str) -> dict[str, Any]:
            method = service.FindMethodByName(method_name)
            request_cls = message_factory.GetMessageClass(method.input_type)
            response_cls = message_factory.GetMessageClass(method.output_type)
            request = json_format.Parse((EXAMPLES / example).read_text(), request_cls())
            stub = channel.unary_unary(
                f"/{SERVICE}/{method_name}",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            return json.loads(json_format.MessageToJson(stub(request, timeout=10)))

        yield invoke


def test_every_example_is_used_here() -> None:
    """Each example file is one the tests below send."""
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == [
        "decide.json",
        "decide_batch.json",
        "decide_order_json.json",
    ]


def test_decide_examples_typed_and_as_json_text_get_the_same_decision(call: Any) -> None:
    """decide.json (typed order) and decide_order_json.json (the same order as JSON text) are
    decided alike, with reasons, the request id echoed and the explanation asked for."""
    typed, text = call("Decide", "decide.json"), call("Decide", "decide_order_json.json")
    assert typed["requestId"] == "example-typed"
    assert text["requestId"] == "example-json"
    for reply in (typed, text):
        assert reply["decision"]["outcome"] in {"OUTCOME_ALLOW", "OUTCOME_DENY"}
        assert reply["decision"]["reasons"]
        assert reply["decision"]["bundle"]["revision"]
        assert reply["decision"]["evaluatedAt"] == "2026-03-10T12:00:00Z"
    assert typed["decision"]["explanation"]["matchedRules"]
    assert "explanation" not in text["decision"]

    def codes(reply: dict[str, Any]) -> tuple[Any, ...]:
        d = reply["decision"]
        return d["outcome"], [r["code"] for r in d["reasons"]], [f["code"] for f in d.get("followUps", [])]

    assert codes(typed) == codes(text)


def test_decide_batch_example_answers_each_item(call: Any) -> None:
    """decide_batch.json: a decision for the first item, INVALID_ARGUMENT on `order_json` for the second."""
    results = call("DecideBatch", "decide_batch.json")["results"]
    assert [r["requestId"] for r in results] == ["batch-1", "batch-2-invalid"]
    assert results[0]["decision"]["outcome"] in {"OUTCOME_ALLOW", "OUTCOME_DENY"}
    assert results[1]["error"]["code"] == 3
    assert results[1]["error"]["reason"] == "request_invalid"
    assert [v["field"] for v in results[1]["error"]["fieldViolations"]] == ["order_json"]
