"""Thin argparse adapters, one module per `exact` subcommand."""
