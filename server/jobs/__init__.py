"""What the server does on its own schedule: pruning old data, daily compliance snapshots
and the weekly report."""
