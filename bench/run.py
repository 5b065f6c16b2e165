"""`make bench`: every benchmark, each printing its baseline measured in the same run."""

from __future__ import annotations

from bench import files_bench, kernel_overhead, las_policy, scheduling


def main() -> None:
    kernel_overhead.main()
    las_policy.main()
    scheduling.main()
    files_bench.main([])


if __name__ == "__main__":
    main()
