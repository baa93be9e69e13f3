"""Security: roles (`roles`), principals and the auth config (`principals`, `authn`,
`jwt_verify`), the interceptor that checks every call (`interceptor`), PII masking (`pii`),
bearer tokens (`tokens`), TLS and the secure-by-default rule
(`transport`), the wiring with the SIGHUP reload (`guard`); secrets and keyrings
(`secrets`), user references for logs (`userref`), the audit log (`audit`).

Import the modules themselves: `server.errors` imports `userref`, and `secrets` imports
`server.errors`, so this package's `__init__` re-exports nothing (no import cycle).
"""
__all__: list[str] = []
