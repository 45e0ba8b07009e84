from chit.cli.main import main

main()
