from vlmsearch.cli import main

main()
