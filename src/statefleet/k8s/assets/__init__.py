"""Package data: the alert rules and the Grafana dashboard, copies of deploy/observability/ kept equal by a test."""
