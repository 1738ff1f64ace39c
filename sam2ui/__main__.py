"""``python -m sam2ui``: the same command line as the ``sam2ui`` script."""

from sam2ui.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
