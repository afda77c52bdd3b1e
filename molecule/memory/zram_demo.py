"""Holds ~100 MiB of compressible, not same-filled data; run it in a cgroup with a
small MemoryMax so that most of it is swapped out to zram (verifier demo)."""
import time

data = [(b'kvmlab zram demo %09d ' % i) * 160 for i in range(24000)]
print('zram demo: %d MiB allocated' % (sum(len(d) for d in data) // 1048576), flush=True)
time.sleep(900)
