"""``python -m allo_lightning COMMAND [flags]``: the same as the ``allo-lightning`` console script."""

from .shell import console_main

if __name__ == "__main__":
    console_main()
