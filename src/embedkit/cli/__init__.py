"""The command line: typer options -> a config -> one library call; rich at the edge only."""
