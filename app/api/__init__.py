"""Thin routers: parse, authorise, call one service, shape the answer."""
