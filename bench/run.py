"""`make bench`: every benchmark, each printing its baseline measured in the same run (roughly
40 minutes on 2 cores, from the parts' own times; not timed as a whole). Figures involving an LLM
engine come from the simulator and say so."""

from __future__ import annotations

from bench import (
    access_bench,
    files_bench,
    kernel_overhead,
    las_policy,
    many_agents,
    memory_bench,
    paper,
    peers,
    rate_sweep,
    real_model,
    scale,
    scheduling,
    tools_bench,
)


def main() -> None:
    kernel_overhead.main([])
    rate_sweep.main([])
    las_policy.main()
    many_agents.main(["--agents", "250", "--calls", "5", "--slots", "64", "--rounds", "1"])
    many_agents.main(
        ["--agents", "2000", "--calls", "2", "--slots", "8", "--ahead", "0", "1", "--rounds", "1"]
    )
    scheduling.main()
    paper.main([])
    memory_bench.main([])
    files_bench.main([])
    access_bench.main([])
    tools_bench.main([])
    peers.main([])
    scale.main([])
    real_model.main([])


if __name__ == "__main__":
    main()
