"""Products, their certificates and supply shares, and the public catalogue."""
