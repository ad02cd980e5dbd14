"""Command-line layer (the only Hydra user). See :mod:`weightspace.cli.main`."""
