"""Accounts, roles, passwords, access tokens and the login throttle."""
