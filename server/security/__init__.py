"""Security: secrets and keyrings, user references for logs, the audit log (auth and roles join here)."""
