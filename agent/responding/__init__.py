"""What the agent does about a finding: tell the user, end the app."""
