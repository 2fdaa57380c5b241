"""The gRPC edge of order-policy: proto <-> model conversion, the servicer, statuses.

``convert`` turns requests into :class:`server.model.Snapshot` and decisions into
protobuf; ``servicer`` answers ``orderpolicy.v1.OrderPolicyService`` from the active
policy of a :class:`server.registry.Registry`; ``status`` maps errors to gRPC statuses
with ``google.rpc`` details; ``metrics`` and ``log`` are the observability side.
Nothing here decides anything: the decision core does.
"""
