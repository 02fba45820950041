"""Replay client for the gateway: ``python -m demo.replay --data FILE.csv``."""
