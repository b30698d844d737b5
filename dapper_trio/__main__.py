"""``python -m dapper_trio``: the same command line as ``dapper-trio``."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
