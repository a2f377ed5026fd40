"""``python -m ebm``: the ``ebm`` command."""

from ebm.cli import app

if __name__ == "__main__":
    app(prog_name="ebm")
