"""The projector: a consumer group that applies stream entries to state keys."""
