"""`make bench`: every benchmark, each printing its baseline measured in the same run."""

from __future__ import annotations

from bench import kernel_overhead, scheduling


def main() -> None:
    kernel_overhead.main()
    scheduling.main()


if __name__ == "__main__":
    main()
