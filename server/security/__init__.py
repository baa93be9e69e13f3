"""Security: secrets and keyrings (`secrets`), user references for logs (`userref`), the audit
log (`audit`); authentication and roles join here.

Import the modules themselves: `server.errors` imports `userref`, and `secrets` imports
`server.errors`, so this package's `__init__` re-exports nothing (no import cycle).
"""
__all__: list[str] = []
