"""Command-line tools: ``spokehub serve``, ``check-config``, ``token`` and ``workers``.
Each subcommand is a thin shell over the modules it drives; nothing in the hub imports
this package."""
