"""Approval requests arrive with the just-in-time approvals work."""
