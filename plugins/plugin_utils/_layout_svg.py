# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The layout picture: every socket's cores coloured by pool (controller only).

Pure functions from the ``cpu_topology`` fact and the ``cpu_pools`` result to
an SVG document (``layout_svg``) or a compact text map (``layout_text``). A
core is one box holding all its SMT siblings; NUMA nodes are dashed frames
inside their socket; a legend gives every pool's CPUs and counts. No drawing
library: the SVG is written here.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import format_cpulist, parse_cpulist

#: What a core box can be, in legend order: (key, label, colour, letter).
KINDS = (
    ('host_housekeeping', 'host_housekeeping (host services)', '#e15759', 'H'),
    ('host_shared', 'host_housekeeping + host_emulator (shared)', '#b07aa1', 'S'),
    ('host_emulator', 'host_emulator (QEMU emulator threads, IOThreads)', '#f28e2b', 'E'),
    ('guest_domain', 'guest_domain (shared vCPU pool)', '#4e79a7', 'G'),
    ('none', 'in no pool', '#bab0ac', '-'),
)
COLOURS = dict((k[0], k[2]) for k in KINDS)
LETTERS = dict((k[0], k[3]) for k in KINDS)


class LayoutError(ValueError):
    """Topology or pools that cannot be drawn; the message says why."""


def _pool_sets(pools):
    if not isinstance(pools, dict):
        raise LayoutError('pools must be the cpu_pools result (a dict of cpulists), got %s' % type(pools).__name__)
    out = {}
    for name in ('host_housekeeping', 'host_emulator', 'guest_domain'):
        try:
            out[name] = parse_cpulist(pools.get(name) or '', 'pools.%s' % name)
        except ValueError as exc:
            raise LayoutError(str(exc))
    return out


def core_kind(cpus, sets):
    """The pool of a core (by its CPUs): one of the ``KINDS`` keys."""
    cpus = set(cpus)
    housekeeping = bool(cpus & sets['host_housekeeping'])
    emulator = bool(cpus & sets['host_emulator'])
    if housekeeping and emulator:
        return 'host_shared'
    if housekeeping:
        return 'host_housekeeping'
    if emulator:
        return 'host_emulator'
    if cpus & sets['guest_domain']:
        return 'guest_domain'
    return 'none'


def layout(topology, pools):
    """Sockets -> NUMA nodes -> cores with their pool: plain data both renderers draw.

    ``[{'id', 'cpus', 'nodes': [{'id', 'cores': [{'cpus': [..], 'kind'}]}]}]``;
    a core's node is the node holding its first CPU (``None`` when no node does).
    """
    if not isinstance(topology, dict) or not isinstance(topology.get('packages'), list):
        raise LayoutError('topology must be the cpu_topology fact (with packages), got %s' % type(topology).__name__)
    sets = _pool_sets(pools)
    node_of = {}
    for node in topology.get('numa_nodes') or []:
        for cpu in parse_cpulist(node.get('cpus') or ''):
            node_of[cpu] = node.get('id')
    sockets = []
    for package in topology['packages']:
        nodes = {}
        order = []
        for core in package.get('cores') or []:
            cpus = sorted(core.get('cpus') or [])
            if not cpus:
                continue
            node = node_of.get(cpus[0])
            if node not in nodes:
                nodes[node] = []
                order.append(node)
            nodes[node].append({'cpus': cpus, 'kind': core_kind(cpus, sets)})
        sockets.append({'id': package.get('id'), 'cpus': package.get('cpus', ''),
                        'nodes': [{'id': n, 'cores': nodes[n]} for n in order]})
    return sockets


def legend(topology, pools):
    """``[(kind, label, colour, cores, cpulist)]`` for the kinds present."""
    counts = {}
    cpus = {}
    for socket in layout(topology, pools):
        for node in socket['nodes']:
            for core in node['cores']:
                counts[core['kind']] = counts.get(core['kind'], 0) + 1
                cpus.setdefault(core['kind'], []).extend(core['cpus'])
    return [(key, label, colour, counts[key], format_cpulist(cpus[key]))
            for key, label, colour, _letter in KINDS if key in counts]


# ---------------------------------------------------------------------------
# SVG

CORE_W = 46
CORE_GAP = 6
LINE_H = 13
PAD = 12
MAX_COLUMNS = 12


def _core_height(threads):
    return 10 + LINE_H * max(threads, 1)


def _node_label(node):
    name = 'NUMA node %s' % node['id'] if node['id'] is not None else 'no NUMA node'
    count = len(node['cores'])
    return '%s (%d core%s)' % (name, count, '' if count == 1 else 's')


def layout_svg(topology, pools, title=None):
    """The layout as an SVG document (a string)."""
    sockets = layout(topology, pools)
    threads = max([len(c['cpus']) for s in sockets for n in s['nodes'] for c in n['cores']] or [1])
    core_h = _core_height(threads)
    body = []
    y = 44
    width = 0
    for socket in sockets:
        top = y
        y += 26
        socket_width = 0
        node_blocks = []
        for node in socket['nodes']:
            cores = node['cores']
            columns = min(len(cores), MAX_COLUMNS) or 1
            rows = (len(cores) + columns - 1) // columns
            label = _node_label(node)
            node_w = max(columns * (CORE_W + CORE_GAP) - CORE_GAP, int(len(label) * 6.4)) + 2 * PAD
            node_h = rows * (core_h + CORE_GAP) - CORE_GAP + 2 * PAD + 16
            node_blocks.append((node, columns, node_w, node_h))
            socket_width = max(socket_width, node_w)
        for node, columns, node_w, node_h in node_blocks:
            x0 = 2 * PAD
            body.append('<rect class="numa" x="%d" y="%d" width="%d" height="%d" rx="6" fill="none" '
                        'stroke="#555" stroke-dasharray="5,3"/>' % (x0, y, node_w, node_h))
            body.append('<text class="numa-label" x="%d" y="%d" font-size="11" fill="#333">%s</text>'
                        % (x0 + PAD, y + 14, escape(_node_label(node))))
            for index, core in enumerate(node['cores']):
                cx = x0 + PAD + (index % columns) * (CORE_W + CORE_GAP)
                cy = y + 20 + PAD - 4 + (index // columns) * (core_h + CORE_GAP)
                cpus = ','.join(str(c) for c in core['cpus'])
                tip = 'socket %s, core of CPUs %s: %s' % (socket['id'], cpus, core['kind'])
                body.append('<g class="core-group"><title>%s</title>' % escape(tip))
                body.append('<rect class="core" x="%d" y="%d" width="%d" height="%d" rx="4" fill="%s" '
                            'stroke="#222" stroke-width="0.8" data-pool=%s data-cpus=%s/>'
                            % (cx, cy, CORE_W, core_h, COLOURS[core['kind']], quoteattr(core['kind']),
                               quoteattr(cpus)))
                for line, cpu in enumerate(core['cpus']):
                    body.append('<text x="%d" y="%d" font-size="11" text-anchor="middle" fill="#fff">%d</text>'
                                % (cx + CORE_W // 2, cy + 5 + LINE_H * (line + 1) - 2, cpu))
                body.append('</g>')
            y += node_h + CORE_GAP
        socket_w = socket_width + 2 * PAD
        body.append('<rect class="socket" x="%d" y="%d" width="%d" height="%d" rx="8" fill="none" stroke="#222" '
                    'stroke-width="1.5"/>' % (PAD, top, socket_w, y - top + PAD - CORE_GAP))
        cores = sum(len(n['cores']) for n in socket['nodes'])
        cpu_count = sum(len(c['cpus']) for n in socket['nodes'] for c in n['cores'])
        body.append('<text class="socket-label" x="%d" y="%d" font-size="13" font-weight="bold">socket %s: '
                    '%d cores, %d CPUs</text>' % (2 * PAD, top + 18, escape(str(socket['id'])), cores, cpu_count))
        y += PAD + 14
        width = max(width, socket_w + 2 * PAD)
    entries = legend(topology, pools)
    body.append('<g class="legend">')
    for key, label, colour, count, cpulist in entries:
        body.append('<rect class="legend-swatch" x="%d" y="%d" width="14" height="14" fill="%s" stroke="#222" '
                    'stroke-width="0.8"/>' % (PAD, y, colour))
        text = '%s: %d core%s, CPUs %s' % (label, count, '' if count == 1 else 's', cpulist)
        body.append('<text x="%d" y="%d" font-size="12">%s</text>' % (PAD + 20, y + 11, escape(text)))
        width = max(width, PAD + 20 + int(len(text) * 6.6) + PAD)
        y += 20
    body.append('</g>')
    height = y + PAD
    cpus = topology.get('cpus') if isinstance(topology.get('cpus'), dict) else {}
    heading = title or '%d socket(s), %d cores, %d CPUs, %d thread(s) per core%s' % (
        topology.get('socket_count', len(sockets)), topology.get('core_count', 0),
        topology.get('online_count', 0), topology.get('threads_per_core', threads),
        ', offline %s' % cpus['offline'] if cpus.get('offline') else '')
    width = max(width, PAD * 2 + int(len(heading) * 8))
    head = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
        'font-family="DejaVu Sans, Arial, sans-serif">' % (width, height, width, height),
        '<title>%s</title>' % escape('CPU pools: ' + heading),
        '<rect class="background" x="0" y="0" width="%d" height="%d" fill="#ffffff"/>' % (width, height),
        '<text class="title" x="%d" y="26" font-size="15" font-weight="bold">%s</text>' % (PAD, escape(heading)),
    ]
    return '\n'.join(head + [line for line in body if line] + ['</svg>']) + '\n'


# ---------------------------------------------------------------------------
# text

def layout_text(topology, pools, per_line=12):
    """A compact text map: a legend line per pool, then each socket's cores by NUMA node.

    ``socket 0 node 0: H 0,4 | E 1,5 | G 2,6 | G 3,7`` (letters as in the legend).
    """
    lines = []
    for key, label, _colour, count, cpulist in legend(topology, pools):
        lines.append('%s %s: %d core%s, CPUs %s' % (LETTERS[key], label, count, '' if count == 1 else 's', cpulist))
    for socket in layout(topology, pools):
        for node in socket['nodes']:
            head = 'socket %s node %s:' % (socket['id'], node['id'] if node['id'] is not None else '-')
            cells = ['%s %s' % (LETTERS[c['kind']], ','.join(str(x) for x in c['cpus'])) for c in node['cores']]
            for start in range(0, len(cells), per_line):
                prefix = head if start == 0 else ' ' * len(head)
                lines.append('%s %s' % (prefix, ' | '.join(cells[start:start + per_line])))
    return lines
