from aep_core.cli.main import entry

entry()
