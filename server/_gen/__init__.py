"""Generated protobuf and gRPC code for ``protos/`` (never hand-edited, never committed).

``python -m server._gen`` (the Makefile's ``gen`` target) writes
``orderpolicy/v1/order_policy_pb2.py``, ``order_policy_pb2.pyi`` and
``order_policy_pb2_grpc.py`` here, with imports rewritten to ``server._gen.…``.
A test regenerates into a temporary directory and fails when these files are stale.
"""
