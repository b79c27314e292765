"""A stand-in trainer that exits 0 without writing a result: the ResultMissing case."""

import sys

if __name__ == "__main__":
    print("pretending to train; writing no result", flush=True)
    sys.exit(0)
