"""Idempotency keys: a retried request returns the first answer and creates nothing new."""
