"""``python -m durable``: the ``durable`` command."""

from durable.cli import main

if __name__ == "__main__":
    main()
