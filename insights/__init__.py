"""The domain: what a conversation and an insight are, and how a batch of conversations is analyzed."""
