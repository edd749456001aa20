"""What every process reports about itself: structured logs and Prometheus metrics."""
