"""The local backend: single-user servers as local processes (placeholder until written)."""
