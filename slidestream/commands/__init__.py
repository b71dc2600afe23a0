"""One module per CLI subcommand: `register(subparsers)` adds the parser and sets `func`."""
