"""Code that more than one Sinas runtime service needs: errors, gRPC plumbing, settings, logs."""
