"""Command scripts kept from the original design document (run from the repository root)."""
