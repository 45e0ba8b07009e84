"""The ``chit`` command's entry point (``python -m chit`` and the console script).

The command is the auth server's: without the ``server`` extra (a service's ``pip install chit``)
it says what to install, in one line, instead of a traceback.
"""

import sys


def main() -> None:
    try:
        from chit.cli.main import main as cli_main
    except ModuleNotFoundError as exc:
        if (exc.name or "chit").partition(".")[0] == "chit":
            raise  # a module of chit itself is missing: a bug, not an installation choice
        print(
            f"chit: the chit command needs the auth server's dependencies ({exc.name} is not installed): "
            'pip install "chit[server]"',
            file=sys.stderr,
        )
        sys.exit(1)
    cli_main()


if __name__ == "__main__":
    main()
