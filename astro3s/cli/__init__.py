"""Hydra entry points (``astro3s-*`` console scripts)."""
