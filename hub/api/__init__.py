"""The HTTP surface: OpenAI-compatible routes, body parsing, error rendering."""
