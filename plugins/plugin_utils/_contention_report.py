# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The measured-contention report as Markdown and an SVG chart (controller only).

Renders the ``report`` of ``cpu_contention_measure`` for the
``contention_report`` filter. Pure functions from the report dict to text;
no plotting library: the SVG is written here. The numbers themselves are
computed on the host by ``module_utils/_contention``; the only arithmetic
here is :func:`_contention.compare_phases` for the table that sets phases
side by side.
"""

from __future__ import annotations

from xml.sax.saxutils import escape as _xml_escape

from ansible_collections.kvmlab.host_resources.plugins.module_utils._contention import compare_phases

#: Colours of the tier bars; other tier names take the palette in order.
TIER_COLOURS = {'gold': '#c9a227', 'silver': '#8e9aa6', 'bronze': '#a8643a'}
_PALETTE = ('#4e79a7', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1')

#: How a phase is named in headings.
PHASE_LABELS = {
    'in_place': 'busy guests where they started (machine.slice), tier weight split over their scopes',
    'moved': 'busy guests restarted into their tier slices',
    'pool': 'burners floating over the guest pool',
    'cpu': 'burners bound one per guest CPU',
    'existing': 'the load already on the host',
}


def _fmt(value, digits=1, suffix=''):
    if value is None:
        return '-'
    text = ('%.' + str(digits) + 'f') % value
    if text.startswith('-') and not text.strip('-0.'):
        text = text[1:]          # no "-0.0"
    return text + suffix


def _mean(spread):
    return None if spread is None else spread['mean']


def _range_text(spread, digits=1):
    if spread is None:
        return '-'
    low, high = _fmt(spread['min'], digits), _fmt(spread['max'], digits)
    if spread['n'] <= 1 or low == high:
        return _fmt(spread['mean'], digits)
    return '%s [%s, %s]' % (_fmt(spread['mean'], digits), low, high)


def _flag(value):
    if value is None:
        return '-'
    return 'pass' if value else 'FAIL'


def _md_cell(text):
    return str(text).replace('|', '\\|').replace('\n', ' ')


def _phases(report):
    """The phases in the order the scenarios ran them (``[None]`` for a report without phases)."""
    order = []
    for scen in report.get('scenarios', []):
        if scen.get('phase') not in order:
            order.append(scen.get('phase'))
    return order or [None]


def _phase_label(phase):
    return PHASE_LABELS.get(phase, phase or '')


def _load_text(report):
    opts = report.get('options', {})
    load = opts.get('load', '?')
    if load == 'guests':
        guests = report.get('guest_load') or {}
        counts = guests.get('per_tier') or {}
        return ('busy guests (%s), %s vCPU(s) each, every vCPU busy (kernel `%s`), vCPU threads floating over '
                'the guest pool as apply places them; each tier\'s CPU time read from its guests\' vCPU cgroups (libvirt/vcpuN of each guest\'s own cgroup)'
                % (', '.join('%s %s' % (n, t) for t, n in counts.items()) or '?', opts.get('busy_vcpus', '?'),
                   _md_cell(opts.get('guest_kernel', '?'))))
    if load == 'burners':
        return ('burners in the tier slices, %s per guest CPU per loaded tier, placement %s'
                % (opts.get('burners_per_cpu', '?'), opts.get('placement', '?')))
    return '%s, %s placement' % (load, opts.get('placement', '?'))


def _shares_table(lines, scenarios):
    lines.append('| scenario | tier | weight | promised % | achieved % | delta points | of pool % | check |')
    lines.append('|---|---|---:|---:|---:|---:|---:|---|')
    for scen in scenarios:
        for tier, data in scen['tiers'].items():
            if not data['loaded']:
                lines.append('| %s | %s (idle) | %s | - | - | - | %s | - |' % (
                    scen['name'], tier, data['weight'], _range_text(data['pool_pct'])))
                continue
            if 'pool' in scen['checks'] and len(scen['loaded']) == 1:
                check = _flag(scen['passed'])
            elif 'shares' in scen['checks']:
                check = _flag(all(r['tiers'][tier]['within'] for r in scen['runs']))
            else:
                check = '(ratios)'
            lines.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
                scen['name'], tier, data['weight'], _fmt(data['promised_pct']),
                _range_text(data['share_pct']), _range_text(data['delta_points']),
                _range_text(data['pool_pct']), check))
    lines.append('')


def _ratios_table(lines, scenarios):
    lines.append('| scenario | pair | promised | achieved | error % | check |')
    lines.append('|---|---|---:|---:|---:|---|')
    for scen in scenarios:
        for index, ratio in enumerate(scen['ratios']):
            if 'ratios' in scen['checks']:
                check = _flag(all(r['ratios'][index]['within'] for r in scen['runs']))
            else:
                check = '-'
            lines.append('| %s | %s | %s | %s | %s | %s |' % (
                scen['name'], ratio['pair'], _fmt(ratio['promised'], 2), _range_text(ratio['achieved'], 2),
                _range_text(ratio['error_pct']), check))
    lines.append('')


def render_markdown(report, command=None, title=None):
    """The report as Markdown: a summary, tables of shares and ratios per phase, the pool and placement."""
    opts = report.get('options', {})
    lines = []
    lines.append('# %s' % (title or 'Measured contention between weighted tiers'))
    lines.append('')
    verdict = 'PASS' if report.get('passed') else 'FAIL'
    lines.append('**Result: %s** on `%s` (%s), %s.' % (
        verdict, _md_cell(report.get('host', '?')), _md_cell(report.get('kernel', '?')),
        _md_cell(report.get('generated', '?'))))
    lines.append('')
    if command:
        lines.append('Produced by:')
        lines.append('')
        lines.append('```sh')
        lines.append(command)
        lines.append('```')
        lines.append('')
    pool = report.get('pool', {})
    lines.append('Guest pool `%s` (%s CPUs), host reserve `%s`. Load: %s; %s s warm-up, %s s window, %s run(s) per '
                 'scenario. Tolerance: shares +/-%s points, ratios +/-%s %%, a lone tier >= %s %% of the pool.'
                 % (pool.get('guest_domain', '?'), pool.get('cpus', '?'), pool.get('host_reserved', '?'),
                    _load_text(report), _fmt(opts.get('warmup'), 0), _fmt(opts.get('window'), 0),
                    opts.get('repeats', '?'), _fmt(opts.get('tolerance'), 1), _fmt(opts.get('ratio_tolerance'), 0),
                    _fmt(opts.get('min_pool_share'), 0)))
    lines.append('')
    lines.append('Promised share = weight / sum of the loaded tiers\' weights; achieved share = the tier\'s CPU time '
                 '(%s) / the loaded tiers\' CPU time; pool = the tier\'s CPU time / (window x guest CPUs). With '
                 'several runs: mean [min, max].'
                 % ('the sum over its guests\' vCPU cgroups (`libvirt/vcpuN` below each guest\'s own cgroup, '
                    'the whole guest cgroup where libvirt made none), found from `/proc/<qemu pid>/cgroup`'
                    if opts.get('load') == 'guests' else 'its slice\'s `cpu.stat` `usage_usec`'))
    lines.append('')
    phases = _phases(report)
    scenarios = report.get('scenarios', [])
    for phase in phases:
        chosen = [s for s in scenarios if s.get('phase') == phase]
        suffix = ': %s' % _phase_label(phase) if len(phases) > 1 else ''
        lines.append('## Shares%s' % suffix)
        lines.append('')
        _shares_table(lines, chosen)
    for phase in phases:
        chosen = [s for s in scenarios if s.get('phase') == phase]
        suffix = ': %s' % _phase_label(phase) if len(phases) > 1 else ''
        lines.append('## Ratios%s' % suffix)
        lines.append('')
        _ratios_table(lines, chosen)
    compared = compare_phases(scenarios) if len(phases) > 1 else []
    if compared:
        lines.append('## Phases compared')
        lines.append('')
        lines.append('Achieved share of each loaded tier (a lone tier: of the pool) per phase, and the spread '
                     'between the phases in points.')
        lines.append('')
        lines.append('| scenario | tier | promised %% | %s | spread points |' % ' | '.join(
            '%s %%' % p for p in phases))
        lines.append('|---|---|---:|%s---:|' % ('---:|' * len(phases)))
        for entry in compared:
            lines.append('| %s | %s | %s | %s | %s |' % (
                entry['scenario'], entry['tier'], _fmt(entry['promised_pct']),
                ' | '.join(_fmt(entry['shares'].get(p)) for p in phases), _fmt(entry['spread_points'])))
        lines.append('')
    lines.append('## Scenarios')
    lines.append('')
    lines.append('| scenario | loaded | checks | pool busy % | loaded tiers of pool % | time s | result |')
    lines.append('|---|---|---|---:|---:|---:|---|')
    for scen in scenarios:
        name = scen['name'] if len(phases) == 1 else '%s (%s)' % (scen['name'], scen.get('phase'))
        lines.append('| %s | %s | %s | %s | %s | %s | %s |' % (
            name, ', '.join(scen['loaded']), ', '.join(scen['checks']),
            _range_text(scen.get('pool_busy_pct')), _range_text(scen.get('loaded_pool_pct')),
            _fmt(scen.get('duration_sec'), 0), _flag(scen['passed'])))
    lines.append('')
    placement = report.get('placement') or {}
    if placement:
        lines.append('## Did guest vCPU time run on reserved CPUs?')
        lines.append('')
        lines.append('| threads | count | confined to the pool by affinity | evidence | ran on reserved CPUs | '
                     'sampled CPU time on reserved, ms |')
        lines.append('|---|---:|---:|---|---|---:|')
        for key, label in (('vcpus', 'guest vCPU threads'), ('burners', 'burners')):
            data = placement.get(key)
            if not data:
                continue
            ran = data.get('ran_on_reserved')
            lines.append('| %s | %s | %s | %s | %s | %s |' % (
                label, data['threads'], data['confined_to_pool'], data['evidence'],
                '-' if ran is None else ('yes' if ran else 'no'),
                _fmt(data['runtime_on_reserved_usec'] / 1000.0, 0)))
        loose = (placement.get('vcpus') or {}).get('may_leave_pool') or []
        if loose:
            lines.append('')
            lines.append('vCPU threads whose affinity reaches outside the pool: %s.'
                         % ', '.join('`%s`' % _md_cell(n) for n in loose))
        lines.append('')
        lines.append('Evidence `affinity`: every thread\'s `Cpus_allowed_list` lies inside the guest pool, so the '
                     'kernel cannot run it elsewhere (the sampled `processor` field agrees). Evidence `samples`: '
                     'some affinity reaches outside the pool; the `processor` field (`/proc/PID/task/TID/stat` '
                     'field 39) and `schedstat` run time were sampled every %s s during each window.'
                     % _fmt(opts.get('sample_interval'), 1))
        lines.append('')
    left = list(report.get('leftover_units') or []) + list(report.get('leftover_guests') or [])
    lines.append('Left running after the run: %s.' % ('nothing' if not left else ', '.join(left)))
    lines.append('')
    return '\n'.join(lines)


def _esc(text):
    return _xml_escape(str(text), {'"': '&quot;'})


def tier_colour(tier, order):
    if tier in TIER_COLOURS:
        return TIER_COLOURS[tier]
    others = [t for t in order if t not in TIER_COLOURS]
    index = others.index(tier) if tier in others else 0
    return _PALETTE[index % len(_PALETTE)]


def render_svg(report, title=None):
    """An SVG chart: one panel per scenario, achieved against promised per tier.

    Multi-tier panels plot each loaded tier's share of the loaded tiers' CPU
    time against its promised share, with the tolerance band around the
    promise; lone-tier panels plot the tier's share of the pool against
    100 %, with the minimum as a dashed line. Whiskers show min-max over runs.
    """
    opts = report.get('options', {})
    tolerance = float(opts.get('tolerance', 2.0))
    min_pool = float(opts.get('min_pool_share', 90.0))
    scenarios = report.get('scenarios', [])
    multi_phase = len(_phases(report)) > 1
    order = []
    for scen in scenarios:
        for tier in scen['tiers']:
            if tier not in order:
                order.append(tier)
    panel_w = 40 + 34 * max([1] + [len(s['loaded']) for s in scenarios])
    left, top, plot_h, bottom = 56, 64, 240, 92
    panel_w = max(panel_w, 130, (660 - left - 20) // max(1, len(scenarios)))
    width = left + panel_w * max(1, len(scenarios)) + 20
    height = top + plot_h + bottom + (12 if multi_phase else 0)

    def y_of(pct):
        pct = max(0.0, min(100.0, pct))
        return top + plot_h - plot_h * pct / 100.0

    out = []
    out.append('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
               'font-family="DejaVu Sans, Arial, sans-serif" font-size="11">' % (width, height, width, height))
    out.append('<title>%s</title>' % _esc(title or 'Achieved against promised CPU shares'))
    out.append('<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>' % (width, height))
    verdict = 'PASS' if report.get('passed') else 'FAIL'
    out.append('<text x="%d" y="22" font-size="14" font-weight="bold">%s</text>'
               % (left, _esc(title or 'Achieved against promised CPU shares per scenario')))
    out.append('<text x="%d" y="40" fill="#444">%s: %s, window %s s x %s, tolerance +/-%s points, '
               'lone tier &gt;= %s %% of pool</text>'
               % (left, _esc(report.get('host', '?')), verdict, _fmt(opts.get('window'), 0),
                  _esc(opts.get('repeats', '?')), _fmt(tolerance, 1), _fmt(min_pool, 0)))
    # axis and grid
    for pct in range(0, 101, 20):
        y = y_of(pct)
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e3e3e3"/>' % (left, y, width - 20, y))
        out.append('<text x="%d" y="%.1f" text-anchor="end" fill="#555">%d</text>' % (left - 6, y + 4, pct))
    out.append('<text transform="translate(16,%d) rotate(-90)" text-anchor="middle" fill="#333">'
               'percent (share of loaded tiers; lone tier: of pool)</text>' % (top + plot_h // 2))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>' % (left, top, left, top + plot_h))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>'
               % (left, top + plot_h, width - 20, top + plot_h))
    for pindex, scen in enumerate(scenarios):
        x0 = left + pindex * panel_w
        lone = len(scen['loaded']) == 1
        if pindex:
            out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#bbb" stroke-dasharray="2,3"/>'
                       % (x0, top, x0, top + plot_h))
        loaded = scen['loaded']
        slot = (panel_w - 20) / float(max(1, len(loaded)))
        bar_w = min(40.0 if lone else 26.0, slot * 0.7)
        for tindex, tier in enumerate(loaded):
            data = scen['tiers'][tier]
            cx = x0 + 10 + slot * (tindex + 0.5)
            if lone:
                achieved = data['pool_pct']
                promised = 100.0
            else:
                achieved = data['share_pct']
                promised = data['promised_pct']
            value = _mean(achieved)
            colour = tier_colour(tier, order)
            if not lone and promised is not None:
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#2b8a3e" fill-opacity="0.15">'
                           '<title>tolerance %s +/- %s</title></rect>'
                           % (cx - bar_w / 2 - 4, y_of(promised + tolerance), bar_w + 8,
                              y_of(promised - tolerance) - y_of(promised + tolerance),
                              _fmt(promised), _fmt(tolerance)))
            if value is not None:
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">'
                           '<title>%s %s: achieved %s %%, promised %s %%</title></rect>'
                           % (cx - bar_w / 2, y_of(value), bar_w, top + plot_h - y_of(value), colour,
                              _esc(scen['name']), _esc(tier), _fmt(value), _fmt(promised)))
                if achieved and achieved.get('n', 1) > 1:
                    out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222"/>'
                               % (cx, y_of(achieved['min']), cx, y_of(achieved['max'])))
                if lone:
                    label_y = y_of(value) + 14
                else:
                    top_pct = max(value, (achieved or {}).get('max', value),
                                  (promised or 0) + tolerance)
                    label_y = y_of(top_pct) - 5
                out.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10" fill="%s">%s</text>'
                           % (cx, label_y, '#ffffff' if lone else '#111111', _fmt(value)))
            if promised is not None:
                out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#111" stroke-width="2">'
                           '<title>promised %s %%</title></line>'
                           % (cx - bar_w / 2 - 5, y_of(promised), cx + bar_w / 2 + 5, y_of(promised),
                              _fmt(promised)))
            out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#333">%s</text>'
                       % (cx, top + plot_h + 14, _esc(tier)))
        if lone:
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c92a2a" stroke-dasharray="5,3">'
                       '<title>minimum %s %% of the pool</title></line>'
                       % (x0 + 6, y_of(min_pool), x0 + panel_w - 6, y_of(min_pool), _fmt(min_pool, 0)))
        mark = 'pass' if scen['passed'] else 'FAIL'
        out.append('<text x="%.1f" y="%d" text-anchor="middle" font-weight="bold">%s</text>'
                   % (x0 + panel_w / 2.0, top + plot_h + 32, _esc(scen['name'])))
        if multi_phase:
            out.append('<text x="%.1f" y="%d" text-anchor="middle" font-size="9" fill="#555">%s</text>'
                       % (x0 + panel_w / 2.0, top + plot_h + 60, _esc(scen.get('phase') or '')))
        out.append('<text x="%.1f" y="%d" text-anchor="middle" fill="%s">%s (%s)</text>'
                   % (x0 + panel_w / 2.0, top + plot_h + 47, '#2b8a3e' if scen['passed'] else '#c92a2a',
                      mark, _esc(', '.join(scen['checks']))))
    # legend
    ly = top + plot_h + (84 if multi_phase else 72)
    lx = left
    out.append('<rect x="%d" y="%d" width="12" height="10" fill="#888"/>' % (lx, ly - 9))
    out.append('<text x="%d" y="%d">achieved (mean; whisker min-max)</text>' % (lx + 16, ly))
    lx += 220
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#111" stroke-width="2"/>' % (lx, ly - 4, lx + 14, ly - 4))
    out.append('<text x="%d" y="%d">promised</text>' % (lx + 18, ly))
    lx += 80
    out.append('<rect x="%d" y="%d" width="14" height="10" fill="#2b8a3e" fill-opacity="0.15"/>' % (lx, ly - 9))
    out.append('<text x="%d" y="%d">tolerance</text>' % (lx + 18, ly))
    lx += 84
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#c92a2a" stroke-dasharray="5,3"/>'
               % (lx, ly - 4, lx + 16, ly - 4))
    out.append('<text x="%d" y="%d">lone-tier minimum</text>' % (lx + 20, ly))
    out.append('</svg>')
    return '\n'.join(out) + '\n'
