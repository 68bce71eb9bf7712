from .extraction import main

main()
