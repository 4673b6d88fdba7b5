"""Installing and running the agent as the OS's service (systemd, launchd, Windows)."""
