"""The Kubernetes backend (placeholder until written)."""
