"""CRIU, driven over its RPC (``criu swrk`` on a socketpair, CRIU's own protobuf schema).

``rpc.proto`` is CRIU's ``images/rpc.proto`` as shipped; ``rpc_pb2.py``/``.pyi`` are made
from it by ``protoc --python_out=. --pyi_out=. rpc.proto`` (see ``swrk``). Never the text
CRIU prints: every answer is a message.
"""
