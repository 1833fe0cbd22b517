"""ssl_minimal."""
