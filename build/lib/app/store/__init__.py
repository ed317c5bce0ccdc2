"""Persistence: models, the engine, and the queries the rest of the service calls by name."""
