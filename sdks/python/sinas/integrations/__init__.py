"""Framework integrations; each imports its framework, which the core SDK does not need."""
