"""The EXACT model: network, organ-confined MIL pooling, losses, model package and inference."""
