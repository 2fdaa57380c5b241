"""Python client of order-policy: "may this lab-test order be cancelled right now?".

    from order_policy_client import Client, InvalidArgument

    with Client("order-policy.example.svc:50051") as client:
        decision = client.decide(order_json_text_or_dict, action="cancel_order")
        decision.outcome                                # "ALLOW" or "DENY"
        [r.code for r in decision.reasons]
        [(f.code, f.http_method, f.path) for f in decision.follow_ups]

Depends only on grpcio and protobuf; the generated code of ``protos/`` ships inside
(``order_policy_client._gen``). ``order_policy_client.testing`` starts a real server for tests.
"""

from order_policy_client._client import DEFAULT_TIMEOUT, SERVICE_CONFIG, Client, channel_options, normalize_target
from order_policy_client._convert import Request
from order_policy_client._errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    OrderPolicyError,
    RevisionNotLoaded,
    Unavailable,
)
from order_policy_client._results import BundleRef, Decision, Explanation, FollowUp, Reason

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT",
    "SERVICE_CONFIG",
    "BundleRef",
    "Client",
    "DeadlineExceeded",
    "Decision",
    "Explanation",
    "FieldViolation",
    "FollowUp",
    "InvalidArgument",
    "OrderPolicyError",
    "Reason",
    "Request",
    "RevisionNotLoaded",
    "Unavailable",
    "channel_options",
    "normalize_target",
]
