"""What the agent watches: running processes, installed apps, network connections.

Each sensor turns the machine's state into `policies.observations` values; the
policy engine decides what they mean.
"""
