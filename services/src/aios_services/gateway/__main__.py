from aios_services.gateway.main import main

main()
