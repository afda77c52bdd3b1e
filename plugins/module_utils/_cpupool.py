# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""CPU pool membership, plans and reports: the decisions of the cpu_pool role.

Pure functions from data to data; nothing here talks to libvirt or reads a
file. The CPU arithmetic (what a member gives up, how a model changes) is
:mod:`._cpumodel`'s; this module decides who is in which pool, what an
action recalculates and what the run reports. The filters in
``plugins/filter/cpu_pool.py`` are its face.

Data model
----------
*Pools* are inventory groups named ``<prefix><pool>`` (``groups`` is
Ansible's ``groups`` variable). Each member records its pool in a local
fact (the *record*, :func:`pool_record`)::

    {'schema': 1, 'pool': 'alpha', 'members': ['hv1', 'hv2'],
     'model': {'name': ..., 'vendor': ..., 'digest': ..., 'features': [...], 'xml': ...},
     'host_cpu': {'model': ..., 'vendor': ..., 'features': [...]}, 'gives_up': [...]}

A host's *membership state* compares its inventory pool (``pool``) with its
recorded pool (``recorded``), see :func:`membership_state`. A *plan*
(:func:`plan`) names the pools an action recalculates or shows and their
members in the play. The reports take the modules' results as Ansible
registers them: ``libvirt_cpu_baseline`` loop results (``item.key`` the
pool, ``item.value`` its members, ``baseline`` or ``msg``), and per host
the ``libvirt_cpu_model`` and ``libvirt_cpu_baseline`` results; a skipped
or missing result counts as empty.
"""

from __future__ import annotations

import base64
import binascii
import json

from ansible_collections.kvmlab.host_resources.plugins.module_utils import _cpumodel as cm

ACTIONS = ('join', 'move', 'recalc', 'stat', 'leave')
#: actions that recalculate pools (all but stat)
CONVERGING = ('join', 'move', 'recalc', 'leave')
STATES = ('member', 'joining', 'moving', 'leaving', 'outside', 'none')
#: name of the compare entry of the pool model itself
MODEL_CHECK = 'pool model'
#: suffix of the compare entry of a running guest's live CPU
RUNNING_SUFFIX = ' (running)'
RECORD_SCHEMA = 1


class CpuPoolError(ValueError):
    """Input the role cannot work with; the message names what and why."""


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def _unique(items):
    """Items in first-seen order, each once."""
    return list(dict.fromkeys(items))


def _result(value):
    """A registered module result as a dict ({} when missing or skipped)."""
    return value if isinstance(value, dict) else {}


def _guest_label(host, guest):
    return '%s/%s' % (host, guest)


def _require(value, keys, what):
    """``value`` when it is a dict with ``keys``; :class:`CpuPoolError` naming ``what`` otherwise."""
    if not isinstance(value, dict):
        raise CpuPoolError('%s must be a dict, got %s' % (what, type(value).__name__))
    missing = [key for key in keys if key not in value]
    if missing:
        raise CpuPoolError('%s lacks %s' % (what, ', '.join(missing)))
    return value


MEMBERSHIP_KEYS = ('prefix', 'groups', 'leaving', 'hosts', 'states', 'recorded')
PLAN_KEYS = ('action', 'targets', 'pools', 'hosts')


# ---------------------------------------------------------------------------
# Membership
# ---------------------------------------------------------------------------

def leaving_hosts(value):
    """The hosts of ``cpu_pool_leave``: a list, or names separated by commas."""
    if not value:
        return []
    if isinstance(value, str):
        value = value.split(',')
    if not isinstance(value, (list, tuple)):
        raise CpuPoolError('cpu_pool_leave must be a list of host names or names separated by commas, got %r'
                           % (value,))
    return _unique(name.strip() for name in (str(item) for item in value) if name.strip())


def pool_groups(groups, prefix):
    """``{pool: [hosts]}`` of the inventory groups named ``<prefix><pool>``."""
    if not prefix:
        raise CpuPoolError('cpu_pool_group_prefix must not be empty (every group would be a pool)')
    return dict((name[len(prefix):], list(hosts or ())) for name, hosts in sorted((groups or {}).items())
                if name.startswith(prefix) and len(name) > len(prefix))


def decode_record(slurped, host='host'):
    """The pool record of an ``ansible.builtin.slurp`` result; ``{}`` when there is none.

    A result without ``content`` (the file does not exist) means no record.
    Content that is not a JSON object raises :class:`CpuPoolError`.
    """
    slurped = _result(slurped)
    if 'content' not in slurped:
        return {}
    try:
        text = base64.b64decode(slurped['content']).decode('utf-8')
        record = json.loads(text)
    except (binascii.Error, TypeError, UnicodeDecodeError, ValueError) as exc:
        raise CpuPoolError('%s: the pool record %s is not valid JSON (%s); remove it or run leave'
                           % (host, slurped.get('source', ''), exc))
    if not isinstance(record, dict):
        raise CpuPoolError('%s: the pool record %s is not a JSON object' % (host, slurped.get('source', '')))
    return record


def membership_state(pool, recorded, leaving=False):
    """One host's state from its inventory pool and its recorded pool.

    - ``leaving``: named in cpu_pool_leave (whatever the rest says);
    - ``member``: in the group of the pool it recorded;
    - ``moving``: in another pool's group than the one it recorded;
    - ``joining``: in a pool group, no pool recorded;
    - ``outside``: a pool recorded, in no pool group (removed without leave);
    - ``none``: neither.
    """
    if leaving:
        return 'leaving'
    if pool:
        if pool == recorded:
            return 'member'
        return 'moving' if recorded else 'joining'
    return 'outside' if recorded else 'none'


def memberships(groups, prefix, hosts, slurped=None, leave=None):
    """The membership of every host of the play.

    ``groups``: Ansible's ``groups``; ``hosts``: the play's hosts;
    ``slurped``: ``{host: slurp result of its record}``; ``leave``: the
    hosts that leave. Returns::

        {'prefix': ..., 'groups': {pool: [hosts]}, 'leaving': [...],
         'hosts': {host: {'pool': inventory pool or '', 'recorded': recorded pool or '',
                          'state': ..., 'record': {...}, 'error': '' or a message}},
         'states': {host: state}, 'recorded': {host: recorded pool or ''}}

    A host in several pool groups, or with an unreadable record, gets an
    ``error`` (the role fails that host) and no entry in ``states`` and
    ``recorded``.
    """
    by_pool = pool_groups(groups, prefix)
    leaving = leaving_hosts(leave)
    slurped = slurped or {}
    result = {'prefix': prefix, 'groups': by_pool, 'leaving': leaving, 'hosts': {}, 'states': {}, 'recorded': {}}
    for host in hosts or ():
        error = ''
        in_groups = sorted(pool for pool, members in by_pool.items() if host in members)
        if len(in_groups) > 1:
            error = ('%s is in several CPU pool groups (%s); a host belongs to one pool'
                     % (host, ', '.join(prefix + pool for pool in in_groups)))
        try:
            record = decode_record(slurped.get(host), host)
        except CpuPoolError as exc:
            record, error = {}, error or str(exc)
        pool = in_groups[0] if in_groups else ''
        recorded = record.get('pool') or ''
        if not isinstance(recorded, str):
            record, recorded, error = {}, '', error or '%s: the pool record names no pool' % host
        state = membership_state(pool, recorded, host in leaving)
        result['hosts'][host] = {'pool': pool, 'recorded': recorded, 'state': state, 'record': record,
                                 'error': error}
        if not error:
            result['states'][host] = state
            result['recorded'][host] = recorded
    return result


def _with_state(membership, state):
    return [host for host, value in membership['states'].items() if value == state]


# ---------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------

def _targets(membership, action, name):
    """Pools the action works on, and the refusals and notes that come with them."""
    states, hosts, prefix = membership['states'], membership['hosts'], membership['prefix']
    errors, message = [], None
    if action == 'join':
        targets = _unique(hosts[host]['pool'] for host in _with_state(membership, 'joining'))
        in_targets = set(host for pool in targets for host in membership['groups'].get(pool, ()))
        movers = [host for host in _with_state(membership, 'moving') if host in in_targets]
        if movers:
            errors.append(''.join('%s is recorded in pool %s but listed in group %s%s; '
                                  % (host, hosts[host]['recorded'], prefix, hosts[host]['pool'])
                                  for host in movers) + 'run the move action for a host that changes pools')
        if not targets:
            message = ('No host to join: every host in a %s<pool> group has joined its pool already (add a host '
                       'to such a group in the inventory, then run join)' % prefix)
    elif action == 'move':
        moving = _with_state(membership, 'moving')
        targets = _unique([hosts[host]['pool'] for host in moving] + [hosts[host]['recorded'] for host in moving])
        if not targets:
            message = "No host to move: no host of the play is listed in another pool's group than the pool it recorded"
    elif action == 'recalc':
        targets = [name] if name else sorted(set(hosts[host]['pool'] for host in states if hosts[host]['pool']))
        unknown = [pool for pool in targets if pool not in membership['groups']]
        if unknown:
            errors.append('no inventory group for pool(s) %s (pools are the groups named %s<pool>)'
                          % (', '.join(unknown), prefix))
        pending = [host for pool in targets for host in membership['groups'].get(pool, ())
                   if states.get(host) in ('joining', 'moving')]
        if pending:
            errors.append(''.join('%s is listed in group %s%s but %s; '
                                  % (host, prefix, hosts[host]['pool'],
                                     'has not joined' if states[host] == 'joining'
                                     else 'is recorded in pool %s' % hosts[host]['recorded'])
                                  for host in _unique(pending)) + 'run join or move first')
    elif action == 'leave':
        leaving = membership['leaving']
        missing = [host for host in leaving if host not in states]
        if not leaving or missing:
            errors.append('leave needs cpu_pool_leave, the hosts that leave, each in the play (missing: %s)'
                          % (', '.join(missing) or 'none named'))
        targets = _unique(hosts[host]['recorded'] for host in leaving if host in states and hosts[host]['recorded'])
    elif action == 'stat':
        targets = [name] if name else sorted(set(
            pool for host in states for pool in (hosts[host]['pool'], hosts[host]['recorded']) if pool))
    else:
        raise CpuPoolError('unknown action %r (one of %s)' % (action, ', '.join(ACTIONS)))
    return targets, errors, message


def plan(membership, action, name=''):
    """What an action does: the pools it works on and their members.

    Returns ``{'action', 'targets': pools named, 'pools': {pool: members},
    'member_of': {host: pool}, 'errors': [refusals], 'message': note or
    None, 'hosts': play hosts, 'joining', 'moving', 'leaving'}``.

    Recalculating actions take every inventory member of a pool except the
    leaving hosts, and refuse a pool with a member outside the play; stat
    shows the members that are in the play. Any error means: change
    nothing.
    """
    _require(membership, MEMBERSHIP_KEYS, 'membership (the result of cpu_pool_membership)')
    targets, errors, message = _targets(membership, action, name)
    play = list(membership['states'])
    leaving = membership['leaving']
    pools = {}
    for pool in sorted(set(targets)):
        members = membership['groups'].get(pool, [])
        if action == 'stat':
            members = [host for host in members if host in membership['states']]
        else:
            members = [host for host in members if host not in leaving]
            missing = [host for host in members if host not in membership['states']]
            if missing:
                errors.append('pool %s: %s not in this play (left out by --limit, or unreachable); a pool is '
                              'recalculated with all its members or not at all' % (pool, ', '.join(missing)))
        if members:
            pools[pool] = members
    member_of = {}
    for pool, members in pools.items():
        for host in members:
            member_of.setdefault(host, pool)
    return {
        'action': action,
        'targets': sorted(set(targets)) if action in ('stat', 'recalc') else targets,
        'pools': pools,
        'member_of': member_of,
        'errors': errors,
        'message': message,
        'hosts': play,
        'joining': _with_state(membership, 'joining'),
        'moving': _with_state(membership, 'moving'),
        'leaving': leaving,
    }


# ---------------------------------------------------------------------------
# What a converge sends to the modules and records
# ---------------------------------------------------------------------------

def pool_checks(model_xml, members, guests):
    """The CPUs to check on every member of a pool (``compare`` of libvirt_cpu_baseline).

    The pool model first, then per member and guest the CPU it gets at its
    next start, and for a running guest that does not run it yet the CPU a
    live migration would carry. ``guests``: ``{host: libvirt_cpu_model
    result}``.
    """
    if not isinstance(model_xml, str) or not model_xml.strip():
        raise CpuPoolError('the pool model XML is empty (pass the baseline xml of libvirt_cpu_baseline)')
    guests = guests or {}
    checks = [{'name': MODEL_CHECK, 'xml': model_xml}]
    for host in members:
        for guest in _result(guests.get(host)).get('domains') or ():
            if not guest.get('cpu_after'):
                continue
            label = _guest_label(host, guest['name'])
            checks.append({'name': label, 'xml': guest['cpu_after']})
            if guest.get('pending') and guest.get('live_cpu'):
                checks.append({'name': label + RUNNING_SUFFIX, 'xml': guest['live_cpu']})
    return checks


def models_by_pool(results):
    """``({pool: baseline}, {pool: error message})`` of the pool model loop's results."""
    models, errors = {}, {}
    for result in results or ():
        result = _result(result)
        item = _result(result.get('item'))
        pool = item.get('key')
        if pool is None:
            continue
        if isinstance(result.get('baseline'), dict):
            models[pool] = result['baseline']
        elif not result.get('skipped'):
            errors[pool] = result.get('msg') or 'no model could be computed'
    return models, errors


def pool_record(model, pool, members, host, host_cpu, schema=RECORD_SCHEMA):
    """The record a member keeps of its pool (the ``kvmlab_cpu_pool`` local fact)."""
    for key in ('model', 'vendor', 'digest', 'features', 'xml'):
        if key not in (model or {}):
            raise CpuPoolError('pool %s: the pool model lacks %s (pass the baseline of libvirt_cpu_baseline)'
                               % (pool, key))
    mine = [member for member in model.get('members') or () if member.get('name') == host]
    if not mine:
        raise CpuPoolError('pool %s: %s is not among the members the model was computed from' % (pool, host))
    host_cpu = host_cpu or {}
    return {
        'schema': schema,
        'pool': pool,
        'members': sorted(members),
        'model': {'name': model['model'], 'vendor': model['vendor'], 'digest': model['digest'],
                  'features': list(model['features']), 'xml': model['xml']},
        'host_cpu': {'model': host_cpu.get('model'), 'vendor': host_cpu.get('vendor'),
                     'features': list(host_cpu.get('features') or [])},
        'gives_up': list(mine[0].get('gives_up') or []),
    }


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------

def _record_of(membership, host):
    return _result(membership['hosts'].get(host, {}).get('record'))


def _misfit(pool, check, member):
    message = check.get('message') or ''
    return {'pool': pool, 'cpu': check['name'], 'member': member, 'result': check.get('result'),
            'message': message,
            'text': '%s on %s (%s%s)' % (check['name'], member, check.get('result'),
                                         ': ' + message if message else '')}


def converge_report(plan_, membership, baselines, guests, fits, restored=None, check_mode=False):
    """The report of join, move, recalc and leave.

    ``baselines``: the pool model loop's results; ``guests``, ``fits`` and
    ``restored``: ``{host: result}`` of libvirt_cpu_model (present),
    libvirt_cpu_baseline (compare) and libvirt_cpu_model (absent, leave).
    Per pool: the model, how it changed from the recorded one
    (:func:`._cpumodel.model_change`), who joined, moved or left, each
    member (what it gives up, whether the model fits it) and each guest
    (where it can start); the misfits of every pool; the released hosts.
    """
    _require(plan_, PLAN_KEYS, 'plan (the result of cpu_pool_plan)')
    _require(membership, MEMBERSHIP_KEYS, 'membership (the result of cpu_pool_membership)')
    guests, fits = guests or {}, fits or {}
    states, recorded, leaving = membership['states'], membership['recorded'], membership['leaving']
    moving = [host for host, state in states.items() if state == 'moving']
    report = {'action': plan_['action'], 'check_mode': bool(check_mode), 'pools': [], 'released': [],
              'misfits': [], 'running_misfits': []}
    for result in baselines or ():
        result = _result(result)
        base = result.get('baseline')
        if not isinstance(base, dict):
            continue
        pool, members = result['item']['key'], list(result['item']['value'])
        old = next((record for record in (_record_of(membership, host) for host in members)
                    if record.get('pool') == pool), {})
        old_model = _result(old.get('model'))
        change = cm.model_change(old_model.get('features'), base['features']) if old else {'gained': [], 'lost': []}
        entry = {
            'pool': pool, 'members': members, 'vendor': base['vendor'], 'model': base['model'],
            'digest': base['digest'], 'features': len(base['features']),
            'model_before': {'model': old_model.get('name'), 'digest': old_model.get('digest')} if old else None,
            'gained': change['gained'], 'lost': change['lost'],
            'joined': [host for host in members if states.get(host) == 'joining'],
            'moved_in': [host for host in members if states.get(host) == 'moving'],
            'moved_out': [host for host in moving if recorded.get(host) == pool],
            'left': [host for host in leaving if recorded.get(host) == pool],
            'departed': [host for host in old.get('members') or ()
                         if host not in members and host not in leaving and host not in moving],
            'members_detail': [], 'guests': [], 'pending': [],
        }
        misfit_by_cpu = {}
        for member in members:
            for check in _result(fits.get(member)).get('comparisons') or ():
                if check.get('compatible'):
                    continue
                item = _misfit(pool, check, member)
                if check['name'].endswith(RUNNING_SUFFIX):
                    report['running_misfits'].append(item)
                else:
                    report['misfits'].append(item)
                misfit_by_cpu.setdefault(check['name'], []).append(member)
        for member in base.get('members') or ():
            entry['members_detail'].append({
                'name': member['name'], 'status': states.get(member['name'], 'member'),
                'cpu': member.get('model'), 'features': member.get('features'), 'gives_up': member.get('gives_up'),
                'model_fits': member['name'] not in misfit_by_cpu.get(MODEL_CHECK, ())})
        for member in members:
            for guest in _result(guests.get(member)).get('domains') or ():
                label = _guest_label(member, guest['name'])
                entry['guests'].append({
                    'host': member, 'name': guest['name'], 'active': guest.get('active'),
                    'changed': guest.get('changed'), 'pending': guest.get('pending'),
                    'starts_on_every_member': label not in misfit_by_cpu,
                    'does_not_start_on': misfit_by_cpu.get(label, []),
                    'running_cpu_does_not_fit': misfit_by_cpu.get(label + RUNNING_SUFFIX, [])})
                if guest.get('pending'):
                    entry['pending'].append(label)
        report['pools'].append(entry)
    for host in leaving:
        if host not in (restored or {}):
            continue
        result = _result(restored[host])
        report['released'].append({'host': host, 'pool': recorded.get(host) or None,
                                   'restored': list(result.get('changed_domains') or []),
                                   'pending': list(result.get('pending') or [])})
    return report


def stat_report(plan_, membership, baselines, host_cpus, guests, check_mode=False):
    """The report of stat.

    ``host_cpus`` and ``guests``: ``{host: result}`` of libvirt_cpu_baseline
    (the host CPU) and libvirt_cpu_model (query). Per pool: the recorded
    model and whether the members' records agree, the model the current
    members give and what a recalc would gain or lose
    (:func:`._cpumodel.model_change`), each member's state and what it gives
    up or lacks, members recorded that left the group, and which guests
    carry the recorded model. Notes name hosts recorded in a pool but in no
    pool group.
    """
    _require(plan_, PLAN_KEYS, 'plan (the result of cpu_pool_plan)')
    _require(membership, MEMBERSHIP_KEYS, 'membership (the result of cpu_pool_membership)')
    host_cpus, guests = host_cpus or {}, guests or {}
    states, recorded_pools = membership['states'], membership['recorded']
    models, errors = models_by_pool(baselines)
    tried = set(_result(_result(result).get('item')).get('key') for result in baselines or ())
    report = {'action': 'stat', 'check_mode': bool(check_mode), 'pools': [], 'misfits': [], 'notes': []}
    for pool in plan_['targets']:
        inventory = list(membership['groups'].get(pool, []))
        in_play = list(plan_['pools'].get(pool, []))
        recorders = [host for host in in_play if recorded_pools.get(host) == pool]
        digests = _unique(_result(_record_of(membership, host).get('model')).get('digest') for host in recorders)
        recorded = _record_of(membership, recorders[0]) if recorders else {}
        rec_model = _result(recorded.get('model'))
        fresh = models.get(pool)
        entry = {
            'pool': pool, 'members': inventory,
            'not_in_play': [host for host in inventory if host not in states],
            'recorded_model': {'model': rec_model.get('name'), 'vendor': rec_model.get('vendor'),
                               'digest': rec_model.get('digest'), 'features': len(rec_model.get('features') or ()),
                               'members': recorded.get('members')} if recorded else None,
            'records_agree': len(digests) <= 1,
            'current_model': {'model': fresh['model'], 'vendor': fresh['vendor'], 'digest': fresh['digest'],
                              'features': len(fresh['features'])} if fresh else None,
            'members_detail': [], 'guests_carrying_model': [], 'guests_without_model': [], 'pending': [],
        }
        if pool in tried and not fresh:
            entry['error'] = errors.get(pool, 'no model could be computed')
        if recorded and fresh:
            change = cm.model_change(rec_model.get('features'), fresh['features'])
            entry.update({'recalc_would_gain': change['gained'], 'recalc_would_lose': change['lost'],
                          'recalc_needed': fresh['digest'] != rec_model.get('digest')})
        if recorded:
            entry['departed'] = [host for host in recorded.get('members') or () if host not in inventory]
        model = rec_model if recorded else fresh
        model_features = (model or {}).get('features') or ()
        after = dict((member['name'], member) for member in (fresh or {}).get('members') or ())
        for member in in_play:
            cpu = _result(_result(host_cpus.get(member)).get('host_cpu'))
            features = cpu.get('features') or ()
            entry['members_detail'].append({
                'name': member, 'status': states.get(member), 'recorded_pool': recorded_pools.get(member) or None,
                'cpu': cpu.get('model'), 'vendor': cpu.get('vendor'), 'features': len(features),
                'gives_up': cm.gives_up(features, model_features) if model else [],
                'lacks': cm.lacks(features, model_features) if model else [],
                'gives_up_after_recalc': after.get(member, {}).get('gives_up') if fresh else None})
            for guest in _result(guests.get(member)).get('domains') or ():
                label = _guest_label(member, guest['name'])
                if (recorded and guest.get('pool_after') == pool
                        and guest.get('digest_after') == rec_model.get('digest')):
                    entry['guests_carrying_model'].append(label)
                elif guest.get('pool_after'):
                    entry['guests_without_model'].append('%s (pool %s, other model)' % (label, guest['pool_after']))
                else:
                    entry['guests_without_model'].append(label)
                if guest.get('pending'):
                    entry['pending'].append(label)
        report['pools'].append(entry)
    for host in plan_['hosts']:
        if states.get(host) == 'outside':
            report['notes'].append('%s is recorded in pool %s but in no pool group: run leave with '
                                   'cpu_pool_leave=%s to restore its guests' % (host, recorded_pools[host], host))
    return report


def report(plan_, membership, baselines, guests=None, fits=None, restored=None, host_cpus=None, check_mode=False):
    """The run's report: :func:`stat_report` for stat, :func:`converge_report` otherwise."""
    _require(plan_, PLAN_KEYS, 'plan (the result of cpu_pool_plan)')
    if plan_['action'] == 'stat':
        return stat_report(plan_, membership, baselines, host_cpus, guests, check_mode)
    return converge_report(plan_, membership, baselines, guests, fits, restored, check_mode)


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

def _listing(items):
    """``N`` or ``N (a, b)``."""
    items = list(items or ())
    return '%d%s' % (len(items), ' (%s)' % ', '.join(items) if items else '')


def _stat_pool_lines(entry):
    lines = []
    not_in_play = entry.get('not_in_play') or []
    lines.append('pool %s: %d member(s) in the inventory%s' % (
        entry['pool'], len(entry['members']), ', not in this play: ' + ', '.join(not_in_play) if not_in_play else ''))
    rec = entry.get('recorded_model')
    if rec:
        lines.append('  recorded model: %s (%s, %s features, digest %s)%s' % (
            rec['model'], rec['vendor'], rec['features'], rec['digest'],
            '' if entry.get('records_agree') else ' - MEMBERS RECORD DIFFERENT MODELS: run recalc'))
    else:
        lines.append('  recorded model: none (no member has joined)')
    cur = entry.get('current_model')
    if cur:
        line = '  current members give: %s (%s features)' % (cur['model'], cur['features'])
        if entry.get('recalc_needed'):
            line += '; recalc would gain %s and lose %s' % (_listing(entry.get('recalc_would_gain')),
                                                            _listing(entry.get('recalc_would_lose')))
        elif rec:
            line += '; the recorded model is up to date'
        lines.append(line)
    if 'error' in entry:
        lines.append('  cannot compute a model: %s' % entry['error'])
    for member in entry.get('members_detail') or ():
        lines.append('  %s [%s%s] %s (%s): gives up %s%s' % (
            member['name'], member['status'],
            ' from %s' % member.get('recorded_pool') if member['status'] == 'moving' else '',
            member['cpu'], member['vendor'], _listing(member.get('gives_up')),
            ' - LACKS ' + ', '.join(member['lacks']) if member.get('lacks') else ''))
    for label in entry.get('departed') or ():
        lines.append('  %s: recorded as a member but no longer in the group (run leave on it)' % label)
    without, pending = entry.get('guests_without_model') or [], entry.get('pending') or []
    lines.append('  guests: %d carry the recorded model%s%s' % (
        len(entry.get('guests_carrying_model') or ()),
        ', without it: ' + ', '.join(without) if without else '',
        '; running with an older CPU until their next start: ' + ', '.join(pending) if pending else ''))
    return lines


CONVERGE_GROUPS = (('joined', 'joined'), ('moved_in', 'moved in'), ('moved_out', 'moved out'), ('left', 'left'),
                   ('departed', 'gone from the group without leave (their guests keep the old model)'))


def _converge_pool_lines(entry):
    lines = ['pool %s: %d member(s), %s, model %s (%s features, digest %s)' % (
        entry['pool'], len(entry['members']), entry['vendor'], entry['model'], entry['features'], entry['digest'])]
    before = entry.get('model_before')
    if before and before.get('digest') != entry['digest']:
        lines.append('  model changed from %s: %d feature(s) gained%s, %d lost%s' % (
            before.get('model'), len(entry['gained']), ' (%s)' % ', '.join(entry['gained']) if entry['gained'] else '',
            len(entry['lost']), ' (%s)' % ', '.join(entry['lost']) if entry['lost'] else ''))
    for key, label in CONVERGE_GROUPS:
        if entry.get(key):
            lines.append('  %s: %s' % (label, ', '.join(entry[key])))
    for member in entry.get('members_detail') or ():
        lines.append('  %s [%s] %s: gives up %s%s' % (
            member['name'], member['status'], member['cpu'], _listing(member.get('gives_up')),
            '' if member.get('model_fits') else ' - THE MODEL DOES NOT FIT THIS MEMBER'))
    if 'guests' in entry:
        guests = entry['guests']
        pending = entry.get('pending') or []
        lines.append('  guests: %d, %d changed, %d can start on every member%s' % (
            len(guests), len([g for g in guests if g.get('changed')]),
            len([g for g in guests if g.get('starts_on_every_member')]),
            '; running with an older CPU until their next start: ' + ', '.join(pending) if pending else ''))
    if 'error' in entry:
        lines.append('  %s' % entry['error'])
    return lines


def _by_cpu(misfits):
    grouped = {}
    for item in misfits or ():
        grouped.setdefault(item['cpu'], []).append(item)
    return sorted(grouped.items())


def summary(report):
    """The readable lines of a converge or stat report, one fact a line."""
    lines = []
    if report.get('check_mode'):
        lines.append('check mode: nothing was changed, this is what %s would do' % report['action'])
    for host in report.get('released') or ():
        line = '%s left pool %s: %d guest(s) got their own CPU definition back' % (
            host['host'], host.get('pool') or '(none recorded)', len(host.get('restored') or ()))
        if host.get('pending'):
            line += ', running with the pool CPU until their next start: ' + ', '.join(host['pending'])
        lines.append(line)
    pool_lines = _stat_pool_lines if report.get('action') == 'stat' else _converge_pool_lines
    for entry in report.get('pools') or ():
        lines.extend(pool_lines(entry))
    for cpu, items in _by_cpu(report.get('misfits')):
        first = items[0]
        lines.append('misfit: %s would not start on %s (%s%s)' % (
            cpu, ', '.join(item['member'] for item in items), first['result'],
            ': ' + first['message'] if first.get('message') else ''))
    for cpu, items in _by_cpu(report.get('running_misfits')):
        first = items[0]
        lines.append('%s with its current CPU cannot migrate to %s until its next start (%s)' % (
            cpu, ', '.join(item['member'] for item in items), first.get('message') or first['result']))
    lines.extend(report.get('notes') or ())
    return lines
