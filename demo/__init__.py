"""The `make demo` application: one queue, one small task."""
