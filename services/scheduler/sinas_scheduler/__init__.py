"""The scheduler: owns every table, dispatches work over JetStream, signs tokens."""
