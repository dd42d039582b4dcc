"""Setup, build and run helpers (run as scripts; importable for tests)."""
