"""`python -m compiler recipe=NAME`: the Hydra entry point, nothing else."""

from compiler.cli import main

if __name__ == "__main__":
    main()
