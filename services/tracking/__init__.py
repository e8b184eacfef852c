"""Shipments and parcel tracking: provider webhooks, polling, manual events, pickup sites."""
