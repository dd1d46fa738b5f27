"""Verification: Polygraphy runners for every artifact, the error ledger, accuracy and latency."""
