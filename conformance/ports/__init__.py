"""Ports of the reference's tiny CNN and ViT to each framework, loading a case's weights."""
