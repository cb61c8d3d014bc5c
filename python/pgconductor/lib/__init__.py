"""Small pure helpers of the engine: backoff with jitter, waiting, a daemon thread pool."""
