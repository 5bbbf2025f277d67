"""The executor: runs claimed executions in sandboxed worker processes and reports outcomes."""
