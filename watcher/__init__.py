"""The watcher: list+watch the API server, append raw events to a Redis Stream."""
