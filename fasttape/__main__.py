"""Command line: ``python -m fasttape warm`` (compile every kernel ahead of time),
``python -m fasttape cache`` (where the compiled kernels are, and whether they are built) and
``python -m fasttape readme`` (the README's primitive list, regenerated from the declarations)."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fasttape", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    warm = commands.add_parser("warm", help="compile every kernel into the on-disk cache, with a progress bar")
    warm.add_argument("--quiet", action="store_true", help="no progress bar")
    commands.add_parser("cache", help="print the kernel cache directory and whether it holds compiled kernels")
    build = commands.add_parser("build", help="(a build worker's job) compile the named sweeps and entry points")
    build.add_argument("names", nargs="+", help="sweeps and entry points of fasttape.sweeps, calls:<family>")
    readme = commands.add_parser("readme", help="regenerate the README's primitive list from the declarations")
    readme.add_argument("path", nargs="?", default="README.md", help="the README to update (default: ./README.md)")
    args = parser.parse_args(argv)

    if args.command == "readme":
        from .readme import rewrite

        print(f"{args.path}: {'updated' if rewrite(args.path) else 'already up to date'}")
        return 0

    from . import cache

    if args.command == "cache":
        print(f"directory: {cache.DIRECTORY}")
        print(f"enabled:   {cache.ENABLED}")
        print(f"built:     {cache.is_built()}")
        return 0
    if args.command == "build":
        from . import builds

        known = builds.SWEEPS + tuple(builds.NEEDS) + builds.FAMILY_CALLS
        unknown = [n for n in args.names if n not in known]
        if unknown:
            parser.error(f"unknown kernel(s) {unknown}; known: {known}")
        logging.getLogger("fasttape").setLevel(logging.ERROR)
        builds.build_here(args.names)
        return 0
    from .warm import warm as run

    logging.getLogger("fasttape").setLevel(logging.ERROR)  # the progress bar says it already
    run(quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
