"""Identity reconciliation service: one customer identity per set of shared emails and phones."""
