"""When and how the sensors run: the scan loop, one-shot scans, sensor health, finding lifecycle."""
