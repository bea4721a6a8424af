"""Generated gRPC stubs for ballistics.v1. Do not edit: run `make proto` (scripts/gen_proto.py)."""
