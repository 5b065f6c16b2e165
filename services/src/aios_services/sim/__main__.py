"""`python -m aios_services.sim`: run the simulator."""

from aios_services.sim.main import main

main()
