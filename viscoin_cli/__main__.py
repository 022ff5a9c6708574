"""`python -m viscoin_cli` runs the CLI (torchrun needs a module to launch)."""

from viscoin_cli.cli import main

if __name__ == "__main__":
    main()
