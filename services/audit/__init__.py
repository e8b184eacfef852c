"""Append-only audit log of access to personal data and sensitive actions."""
