"""Small shared utilities (logging, seeding, config printing)."""
