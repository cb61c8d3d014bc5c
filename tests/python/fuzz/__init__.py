"""Fuzz layer: every public SQL function called with generated hostile arguments (hypothesis)."""
