"""Payments: Stripe PaymentIntents, cash on delivery, refunds, and the Stripe webhook inbox."""
