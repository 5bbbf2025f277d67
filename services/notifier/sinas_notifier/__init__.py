"""The notifier: delivers one signed HTTPS callback per finished execution."""
