from jointcredit.cli.main import main

main()
