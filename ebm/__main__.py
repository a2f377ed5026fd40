"""``python -m ebm``: the ``ebm`` command."""

from ebm.cli import main

if __name__ == "__main__":
    main()
