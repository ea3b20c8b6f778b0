"""The `lorapack` CLI's subcommands, one module each, each with `add_arguments` and `run`."""
