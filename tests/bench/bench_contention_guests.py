"""Contention on busy guests (issue 15): a rerunnable benchmark, not a timed test.

On a host given by an inventory (the lab: ``-i .lab/inventory.yml``) it runs
``playbooks/contention_validate.yml`` with busy guests (seed 001's 3 Gold,
4 Silver, 6 Bronze, 2 busy vCPUs each, before and after their move into the
tier slices), writes the report (JSON, Markdown, SVG) and prints the figures
the issue asks for: each tier's share against weight / sum of the busy tiers'
weights, Silver:Bronze with Gold idle against 1.99, a tier alone against
>= 90 % of the pool, and the spread between the in-place and moved phases.
``--also-burners`` adds a burner run (floating, then bound one per CPU);
``--busy-vcpus 1`` the one-busy-vCPU figures.

``--fastvirt`` runs the same module on the private libvirtd of the fast tier
instead (no systemd: cgroup v1 shares; pool CPU 1, reserve CPU 0), for
figures of this machine, not the lab's.

Without ``-i`` or ``--fastvirt`` it prints how to run it and exits 0 (so
tests/bench/run_all.py passes it by).

    python tests/bench/bench_contention_guests.py -i .lab/inventory.yml \\
        --report-dir docs/contention --name lab-report --also-burners
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def summary_lines(report):
    """The issue's figures from a report, one line each."""
    lines = ['load %s, phases %s, passed %s, %.0f s' % (report.get('load'), ', '.join(report.get('phases', [])),
                                                       report.get('passed'), report.get('duration_sec', 0))]
    for scen in report['scenarios']:
        head = '%-9s %-13s' % (scen.get('phase'), scen['name'])
        if len(scen['loaded']) == 1:
            tier = scen['loaded'][0]
            lines.append('%s %s alone: %.1f %% of the pool (>= %.0f)' % (
                head, tier, scen['tiers'][tier]['pool_pct']['mean'], report['options']['min_pool_share']))
            continue
        parts = ['%s %.1f/%.1f' % (t, scen['tiers'][t]['share_pct']['mean'], scen['tiers'][t]['promised_pct'])
                 for t in scen['loaded']]
        worst = max(abs(scen['tiers'][t]['delta_points']['mean']) for t in scen['loaded'])
        line = '%s %s (achieved/promised %%), worst %.1f points' % (head, ', '.join(parts), worst)
        for ratio in scen['ratios']:
            if len(scen['loaded']) < len(scen['tiers']):
                line += '; %s %.2f against %.2f' % (ratio['pair'], ratio['achieved']['mean'], ratio['promised'])
        lines.append(line)
    phases = {}
    for scen in report['scenarios']:
        for tier in scen['loaded']:
            data = scen['tiers'][tier]
            value = data['pool_pct'] if len(scen['loaded']) == 1 else data['share_pct']
            phases.setdefault((scen['name'], tier), {})[scen.get('phase')] = value['mean']
    spreads = [(max(v.values()) - min(v.values()), k) for k, v in phases.items() if len(v) > 1]
    if spreads:
        worst, key = max(spreads)
        lines.append('in place against moved: worst spread %.1f points (%s %s)' % (worst, key[0], key[1]))
    return lines


def run_playbook(args, load, name, extra):
    command = ['ansible-playbook', '-i', args.inventory, os.path.join(REPO, 'playbooks', 'contention_validate.yml'),
               '-e', 'contention_load=%s' % load, '-e', 'contention_report_dir=%s' % os.path.abspath(args.report_dir),
               '-e', 'contention_report_name=%s' % name, '-e', 'contention_fail_on_miss=false',
               '-e', 'contention_window=%s' % args.window, '-e', 'contention_repeats=%d' % args.repeats]
    command += extra
    for item in args.extra_vars:
        command += ['-e', item]
    if args.limit:
        command += ['--limit', args.limit]
    print('$ %s' % ' '.join(command), flush=True)
    start = time.monotonic()
    rc = subprocess.call(command, cwd=REPO)
    print('rc %d, %.0f s whole process' % (rc, time.monotonic() - start))
    path = os.path.join(args.report_dir, '%s.json' % name)
    if rc != 0 or not os.path.exists(path):
        return rc or 1
    with open(path) as handle:
        report = json.load(handle)
    for line in summary_lines(report):
        print('  ' + line)
    print('  report: %s.{json,md,svg}' % os.path.join(args.report_dir, name))
    return 0


def run_fastvirt(args):
    """The module in-process against a private libvirtd (tools/fastvirt), partitions made as the foundation would."""
    sys.path.insert(0, os.path.join(REPO, 'tools', 'fastvirt'))
    sys.path.insert(0, os.path.join(REPO, 'tests', 'integration', 'fast'))
    import conftest  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel  (collection on sys.path)
    import fastvirt as fvlib  # pylint: disable=import-outside-toplevel
    from ansible_collections.kvmlab.host_resources.plugins.modules import cpu_contention_measure as mod
    from ansible_collections.kvmlab.host_resources.tests.unit.module_runner import run_module
    base = fvlib.default_base()
    os.makedirs(base, exist_ok=True)
    fvlib.reap_stale(base)
    state = tempfile.mkdtemp(prefix='b', dir=base)
    with open(os.path.join(state, 'owner.pid'), 'w') as handle:
        handle.write('%d\n' % os.getpid())
    virt = fvlib.FastVirt(state, cache_dir=os.path.join(base, 'cache'))
    token = 'fb' + uuid.uuid4().hex[:6]
    made = []
    try:
        virt.up()
        tiers = {}
        for tier, weight in (('gold', 512), ('silver', 333), ('bronze', 167)):
            for controller in ('cpu', 'cpuset', 'memory', 'blkio', 'unified'):
                parent = os.path.join('/sys/fs/cgroup', controller, 'machine')
                if not os.path.isdir(parent):
                    continue
                path = os.path.join(parent, '%s%s.partition' % (token, tier))
                os.mkdir(path)
                made.append(path)
                if controller == 'cpuset':
                    for name in ('cpuset.cpus', 'cpuset.mems'):
                        with open(os.path.join(parent, name)) as src, open(os.path.join(path, name), 'w') as dst:
                            dst.write(src.read())
                if controller == 'cpu':
                    with open(os.path.join(path, 'cpu.shares'), 'w') as handle:
                        handle.write('%d\n' % weight)
            tiers[tier] = {'slice': 'machine-%s.slice' % tier, 'partition': '/machine/%s%s' % (token, tier),
                           'cpu_weight': weight, 'shares': weight}
        params = {'tiers': tiers, 'guest_cpus': '1', 'reserved_cpus': '0', 'emulator_cpus': '0', 'load': 'guests',
                  'systemd': False, 'uri': virt.uri, 'pid_dir': virt.path('run', 'qemu'),
                  'guest_kernel': virt.kernel('spinall'), 'guest_prefix': token, 'busy_vcpus': args.busy_vcpus,
                  'window': args.window, 'warmup': 2, 'repeats': args.repeats}
        start = time.monotonic()
        result = run_module(mod.main, params)
        print('module %.0f s' % (time.monotonic() - start))
        if result.get('failed'):
            print('failed: %s' % result.get('msg'))
            return 1
        for line in summary_lines(result['report']):
            print('  ' + line)
        if args.report_dir:
            os.makedirs(args.report_dir, exist_ok=True)
            with open(os.path.join(args.report_dir, '%s.json' % args.name), 'w') as handle:
                json.dump(result['report'], handle, indent=2, sort_keys=True)
            print('  report: %s.json' % os.path.join(args.report_dir, args.name))
        return 0
    finally:
        virt.down()
        for path in reversed(made):
            for _attempt in range(50):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.1)
        import shutil  # pylint: disable=import-outside-toplevel
        shutil.rmtree(state, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-i', '--inventory', help='inventory of the host to measure (the lab: .lab/inventory.yml)')
    parser.add_argument('--limit', help='ansible-playbook --limit')
    parser.add_argument('--report-dir', default='contention-report', help='where the reports go (docs/contention)')
    parser.add_argument('--name', default='guests-report', help='base name of the guest report files')
    parser.add_argument('--window', type=float, default=30)
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument('--busy-vcpus', type=int, default=2)
    parser.add_argument('--also-burners', action='store_true',
                        help='also run burners floating and bound (report NAME-burners)')
    parser.add_argument('--fastvirt', action='store_true', help='measure on the private libvirtd of the fast tier')
    parser.add_argument('-e', '--extra-vars', action='append', default=[], help='passed to ansible-playbook')
    args = parser.parse_args(argv)
    if args.fastvirt:
        return run_fastvirt(args)
    if not args.inventory:
        print('bench_contention_guests: skipped (needs -i INVENTORY of a host with the policy applied, '
              'e.g. -i .lab/inventory.yml; or --fastvirt)')
        return 0
    rc = run_playbook(args, 'guests', args.name, ['-e', 'contention_busy_vcpus=%d' % args.busy_vcpus])
    if args.also_burners:
        rc |= run_playbook(args, 'burners', args.name + '-burners', ['-e', 'contention_placement=both'])
    return rc


if __name__ == '__main__':
    sys.exit(main())
