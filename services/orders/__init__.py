"""Orders: checkout, one fulfilment per cooperative, lines with share snapshots, states."""
