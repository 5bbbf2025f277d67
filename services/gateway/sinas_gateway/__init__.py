"""The REST gateway: turns HTTP requests into gRPC calls on the scheduler."""
