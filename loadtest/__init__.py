"""Locust load tests and the benchmark harness; they talk to the service over HTTP only."""
