"""Personal data masked before a conversation leaves for xAI: recognisers find it, placeholders name it,
the masker replaces it (issue 25)."""
