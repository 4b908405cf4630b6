"""One module per top-level subcommand; each exposes `register(subparsers)`.

`engine.cli.main` discovers the modules here, so adding a command means adding a file.
"""
