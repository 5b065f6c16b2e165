from aios_services.recorder.main import main

main()
