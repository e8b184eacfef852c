"""Income attribution: the append-only ledger, self-dealing flags, settlements, the audit."""
