from spendbrake.cli import main

main()
