"""Local development stack: embedded PostgreSQL and NATS, and the `make run` supervisor."""
