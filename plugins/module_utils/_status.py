# -*- coding: utf-8 -*-
# Copyright (c) kvmlab.host_resources contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One verdict for a layer from the states of its items (intended against live).

Every status entry point compares each item it manages with what is live and
gives it a state: ``applied`` (live matches the policy), ``stock`` (nothing of
the policy is there) or ``drifted`` (something else). ``info`` items are shown
but do not count. The layer's verdict is ``applied`` when every counted item
is applied, ``stock`` when every one is stock, and otherwise ``drifted``
naming the items that are not applied.
"""

from __future__ import annotations

STATES = ('applied', 'stock', 'drifted', 'info')


class StatusError(ValueError):
    """Items that are not a list of {name, state} dicts."""


def verdict(items, applied_label='applied', stock_label='stock', drifted_label='drifted'):
    """Return {verdict, applied, stock, drifted, counted, summary} for the items."""
    if not isinstance(items, list):
        raise StatusError('items must be a list of dicts with name and state')
    buckets = dict((state, []) for state in STATES)
    for index, item in enumerate(items):
        if not isinstance(item, dict) or 'name' not in item or item.get('state') not in STATES:
            raise StatusError('items[%d] must be a dict with name and state (one of %s), got %r'
                              % (index, ', '.join(STATES), item))
        buckets[item['state']].append(item['name'])
    counted = len(buckets['applied']) + len(buckets['stock']) + len(buckets['drifted'])
    if counted and len(buckets['applied']) == counted:
        label = applied_label
        summary = '%s: all %d items match the policy' % (label, counted)
    elif counted == 0 or len(buckets['stock']) == counted:
        label = stock_label
        summary = '%s: none of the policy is in place' % label
    else:
        label = drifted_label
        off = []
        if buckets['drifted']:
            off.append('%s not as intended' % ', '.join(buckets['drifted']))
        if buckets['stock']:
            off.append('%s still stock' % ', '.join(buckets['stock']))
        summary = '%s: %s (%d of %d items applied)' % (
            label, '; '.join(off), len(buckets['applied']), counted)
    return {
        'verdict': label,
        'applied': buckets['applied'],
        'stock': buckets['stock'],
        'drifted': buckets['drifted'],
        'counted': counted,
        'summary': summary,
    }


def status_line(item, width=28):
    """One readable line for an item: state, name, intended and live."""
    if not isinstance(item, dict) or 'name' not in item:
        raise StatusError('an item must be a dict with name, state, intended and live, got %r' % (item,))
    return '  %-8s %-*s intended %s; live %s' % (
        item.get('state', '?'), width, item['name'], item.get('intended', '-'), item.get('live', '-'))
