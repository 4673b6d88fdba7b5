"""This machine: its OS, its identity and key pair, who owns what on it."""
