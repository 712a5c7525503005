"""``python -m fasttape.gradbench``: a GradBench tool on this process's stdin and stdout."""

from .protocol import main

if __name__ == "__main__":
    main()
