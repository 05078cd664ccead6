"""The ``ironpost`` command and its subcommands (run, config, postconf, queue)."""
