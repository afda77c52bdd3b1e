"""Holds 8 MiB of identical private anonymous pages that KSM may merge (verifier demo).

The area is marked mergeable before it is written (marked after, the pages
were seen to stay unmerged on the lab host's 6.1 kernel).
"""
import mmap
import time

PAGES = 2048
area = mmap.mmap(-1, PAGES * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
area.madvise(mmap.MADV_MERGEABLE)
area.write(b'kvmlab-ksm-demo!' * (PAGES * mmap.PAGESIZE // 16))
print('ksm demo: %d identical pages marked mergeable' % PAGES, flush=True)
time.sleep(900)
