from .command import main

main(prog="python -m allo_lightning.bench")
