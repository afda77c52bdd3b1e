"""Run every benchmark of tests/bench (not timed tests: they print figures)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    failed = 0
    for name in sorted(os.listdir(HERE)):
        if name.startswith('bench_') and name.endswith('.py'):
            print('== %s' % name, flush=True)
            failed += subprocess.call([sys.executable, os.path.join(HERE, name)] + sys.argv[1:]) != 0
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
