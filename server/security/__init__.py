"""Security: who calls (principals from the auth config), what they may call (roles), the
interceptor that enforces both, and the PII masking policy."""
from .authn import DEV_PRINCIPAL, Authenticator
from .interceptor import AuthInterceptor, current_principal
from .pii import PiiPolicy, mask_value
from .principals import AuthConfig, Principal, load_auth_config, token_hash
from .roles import PII_READER, RPC_ROLES, SENSITIVE, RoleTable

__all__ = ["AuthConfig", "AuthInterceptor", "Authenticator", "DEV_PRINCIPAL", "PII_READER",
           "PiiPolicy", "Principal", "RPC_ROLES", "RoleTable", "SENSITIVE", "current_principal",
           "load_auth_config", "mask_value", "token_hash"]
