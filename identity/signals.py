"""Signal receivers for identity (OIDC group sync is wired here)."""
