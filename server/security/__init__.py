"""Security: roles (`roles`), principals and the auth config (`principals`, `authn`,
`jwt_verify`), the interceptor that checks every call (`interceptor`), PII masking (`pii`),
bearer tokens (`tokens`), and the wiring with the SIGHUP reload (`guard`).

Import the modules themselves: the other security modules (secrets, audit) and `server.errors`
import each other's parts, so this `__init__` re-exports nothing (no import cycle).
"""
__all__: list[str] = []
