"""Small helpers shared by several pipeline stages."""
