"""What the watcher and the projector share: contracts, keys, config, plumbing.

This package imports nothing else of kube2redis.
"""
