"""Warden's central server and the `warden` admin CLI."""
