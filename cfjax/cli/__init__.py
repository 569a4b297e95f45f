"""The command line's parts besides its flags (`cfjax/main.py` parses those and dispatches): the exit code
and line of each error (`exit_codes`), what happens before and as JAX starts (`startup`), and the modes
that read a trained run (`modes`)."""
