"""Generated gRPC stubs of the presculpt.v1 protocol (see presculpt/protos_gen.py)."""
