from soundflow.cli.main import cli

cli()
