"""Fault tests against the embedded broker: crash, scale-out, broker and sink outages, commit stalls."""
