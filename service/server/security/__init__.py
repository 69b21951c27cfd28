"""Who may call what: `auth` (the token interceptor and method scopes), `tokens` (the
tokens file), `protection` (TLS credentials, the interceptor chain, the start-up posture)."""
