"""Security: transport (TLS, mutual TLS, certificate rotation) and the secure-by-default rule."""
