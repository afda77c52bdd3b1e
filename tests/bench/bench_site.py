"""site.yml on a real host (the lab): wall time and tasks of the first apply and of a rerun.

    python tests/bench/bench_site.py --inventory .lab/inventory.yml [--rounds 1] [--keep]

Each round: site.yml from the host's current state (the first apply when the
host is stock), site.yml again (nothing to change), then site_rollback.yml
(unless --keep on the last round). Prints, per run, the wall time of the
whole ansible-playbook process and the recap's task counts (ok, changed,
skipped; ok counts every task that ran on the host, changed ones included). A benchmark, not a
timed test: it fails only when a playbook fails. Without an inventory (or
KVMLAB_BENCH_INVENTORY) it says so and exits 0, so run_all.py can run it
anywhere.
"""
import argparse
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECAP = re.compile(r'^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)', re.M)


def run(inventory, playbook):
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
               ANSIBLE_CONFIG=os.environ.get('ANSIBLE_CONFIG', os.path.join(REPO, 'ansible.cfg')))
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory,
               'kvmlab.host_resources.%s' % playbook]
    start = time.monotonic()
    proc = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    seconds = time.monotonic() - start
    recaps = RECAP.findall(proc.stdout)
    if proc.returncode or not recaps:
        sys.stdout.write(proc.stdout[-4000:])
        raise SystemExit('%s failed (rc %d)' % (playbook, proc.returncode))
    host, ok, changed, _unreachable, failed, skipped = recaps[-1]
    return {'playbook': playbook, 'host': host, 'seconds': seconds, 'ok': int(ok), 'changed': int(changed),
            'failed': int(failed), 'skipped': int(skipped)}


def show(label, result):
    # the recap's ok counts every task that ran on the host, the changed ones included
    print('%-22s %-14s %7.1f s  tasks run %3d (changed %d), skipped %d'
          % (label, result['playbook'], result['seconds'], result['ok'], result['changed'], result['skipped']),
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--inventory', default=os.environ.get('KVMLAB_BENCH_INVENTORY'))
    parser.add_argument('--rounds', type=int, default=1)
    parser.add_argument('--keep', action='store_true', help='leave the last round applied')
    args, _rest = parser.parse_known_args()
    if not args.inventory:
        print('bench_site: no --inventory (or KVMLAB_BENCH_INVENTORY): skipped (needs a real host such as the lab)')
        return 0
    for number in range(1, args.rounds + 1):
        show('round %d first apply' % number, run(args.inventory, 'site'))
        show('round %d rerun' % number, run(args.inventory, 'site'))
        if number < args.rounds or not args.keep:
            show('round %d rollback' % number, run(args.inventory, 'site_rollback'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
