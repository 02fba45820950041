"""Runs the whole local stack: migrations, the local Triton and the gateway."""
