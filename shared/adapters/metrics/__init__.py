"""Adapters of the Metrics port (shared/ports/metrics.py): CloudWatch EMF through
aws-lambda-powertools (Lambda functions) and Prometheus (``lifeboat up``'s ``GET /metrics``)."""
