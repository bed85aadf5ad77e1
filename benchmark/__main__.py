import sys


def _run() -> int:
    try:
        from benchmark.cli.commands import main

        return main()
    except ModuleNotFoundError as err:
        # run by a Python without the project's environment (`python -m benchmark` instead of `uv run ...`)
        if (err.name or "").split(".")[0] in ("benchmark", "adapters"):
            raise
        print(
            f"error: {err.name} is not installed for {sys.executable}; run the benchmark in its environment: "
            "`uv run python -m benchmark ...` (uv installs it on first use)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(_run())
