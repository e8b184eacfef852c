"""Orders: checkout, fulfilments per cooperative, lines with their share snapshots, the state machine."""
