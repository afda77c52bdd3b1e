import pytest

from ansible_collections.kvmlab.host_resources.plugins.module_utils._cpulist import (
    CpuListError, canonical, format_cpulist, format_hexmask, from_cpumap, parse_cpulist,
    parse_hexmask, parse_kernel_cpulist, parse_systemd_cpulist, show_text, to_cpumap,
)


@pytest.mark.parametrize('text, cpus', [
    ('0-3,8', {0, 1, 2, 3, 8}),
    ('0-5,24-29,48-53,72-77', set(range(0, 6)) | set(range(24, 30)) | set(range(48, 54)) | set(range(72, 78))),
    (' 0-3\n', {0, 1, 2, 3}),  # around the whole list (a YAML block scalar): not inside it
    ('\t8\n\n', {8}),
    ('007', {7}),
    ('', set()),
    ('  \n', set()),
    ('7', {7}),
    ('0-15:2/4', {0, 1, 4, 5, 8, 9, 12, 13}),
    ('3,1,2,1', {1, 2, 3}),
])
def test_parse(text, cpus):
    assert parse_cpulist(text) == frozenset(cpus)


@pytest.mark.parametrize('text, message', [
    ('0-', 'cannot parse "0-"'),
    ('a', 'cannot parse "a"'),
    ('5-3', 'runs backwards'),
    ('0-99999999', 'beyond'),
    ('0-8:0/4', 'bad stride'),
    ('1.5', 'cannot parse'),
])
def test_parse_errors_name_the_text(text, message):
    with pytest.raises(CpuListError, match=message) as info:
        parse_cpulist(text, 'pools.guest_domain')
    assert 'pools.guest_domain' in str(info.value)


# Every malformed user mask: the message names the value, the offending text
# and its position (1-based character of the list as given, outer whitespace
# removed).
@pytest.mark.parametrize('text, message', [
    # empty items
    ('0-5,,24-29', 'empty item at character 5 of "0-5,,24-29" (two separators in a row)'),
    ('0,,,1', 'empty item at character 3 of "0,,,1" (two separators in a row)'),
    (',0', 'empty item at character 1 of ",0" (it starts with a separator)'),
    (',', 'empty item at character 1 of "," (it starts with a separator)'),
    ('0,', 'empty item at character 2 of "0," (it ends with a separator)'),
    ('0-3,8,', 'empty item at character 6 of "0-3,8," (it ends with a separator)'),
    # duplicated or misplaced range separators
    ('0--3', 'cannot parse "0--3" at character 1 of "0--3"'),
    ('0-3-5', 'cannot parse "0-3-5" at character 1 of "0-3-5"'),
    ('2,0-3-5', 'cannot parse "0-3-5" at character 3 of "2,0-3-5"'),
    ('-3', 'cannot parse "-3" at character 1'),
    ('4,5-', 'cannot parse "5-" at character 3 of "4,5-"'),
    ('0-3:2', 'cannot parse "0-3:2" at character 1'),
    ('0-7:2/4/8', 'cannot parse "0-7:2/4/8"'),
    ('1;2', 'cannot parse "1;2"'),
    ('0x3', 'cannot parse "0x3"'),
    ('\u0663', 'cannot parse'),  # a non-ASCII digit is no CPU number
    # whitespace inside the list, whatever the kind
    ('0-5, 24-29', 'whitespace (" ") at character 5 of "0-5, 24-29"'),
    ('0-5 24-29', 'whitespace (" ") at character 4 of "0-5 24-29"'),
    ('0 -3', 'whitespace (" ") at character 2 of "0 -3"'),
    ('0- 3', 'whitespace (" ") at character 3'),
    ('1,\t2', 'whitespace ("\\t") at character 3 of "1,\\t2"'),
    ('1\n2', 'whitespace ("\\n") at character 2 of "1\\n2"'),
    # a NUL is file noise, never part of a user mask
    ('0\0', 'cannot parse "0\\0" at character 1 of "0\\0"'),
    # positions in range errors too
    ('1,5-3', 'range "5-3" at character 3 of "1,5-3" runs backwards'),
    ('0,0-70000', 'CPU 70000 in "0-70000" at character 3 of "0,0-70000" is beyond 65535'),
    ('0-8:5/4', 'bad stride "0-8:5/4" at character 1'),
])
def test_malformed_masks_name_text_and_position(text, message):
    with pytest.raises(CpuListError) as info:
        parse_cpulist(text, 'pools.guest_domain')
    assert str(info.value).startswith('pools.guest_domain: '), str(info.value)
    assert message in str(info.value), str(info.value)
    # canonical() is the same strict parser
    with pytest.raises(CpuListError):
        canonical(text)


@pytest.mark.parametrize('text, cpus', [
    ('0-3\n', {0, 1, 2, 3}),
    ('0\n\0', {0}),  # Linux 5.15 on Kunpeng 920: every *_list file
    ('0-7\0', {0, 1, 2, 3, 4, 5, 6, 7}),
    ('0-1,4-5\0\0\0\0\0\0', {0, 1, 4, 5}),  # NUL padding
    ('2-3 \n\0 \0\n', {2, 3}),
    ('\n', set()),  # an empty cpulist file (cpu/isolated, cpu/offline)
    ('\0', set()),
    (b'0-3\n\0', {0, 1, 2, 3}),
])
def test_kernel_file_content_tolerates_trailing_newline_and_nul(text, cpus):
    assert parse_kernel_cpulist(text, '/sys/devices/system/cpu/online') == frozenset(cpus)


@pytest.mark.parametrize('text, message', [
    ('0\0-3\n', 'cannot parse "0\\0-3" at character 1 of "0\\0-3"'),  # NUL in the middle
    ('\0' + '0-3\n', 'cannot parse "\\00-3"'),  # a leading NUL is no terminator
    ('0-3\ngarbage\n', 'whitespace ("\\n") at character 4 of "0-3\\ngarbage"'),
    ('0-3\n\0x', 'whitespace ("\\n") at character 4 of "0-3\\n\\0x"'),  # something after the terminator
    ('0-3,,5\n', 'empty item at character 5'),
    ('0-3,\n', 'it ends with a separator'),
    (b'0-3\xff\n', 'byte 0xff at character 4 is not text'),
])
def test_kernel_file_corruption_still_fails_naming_the_file(text, message):
    with pytest.raises(CpuListError) as info:
        parse_kernel_cpulist(text, '/sys/devices/system/cpu/online')
    assert str(info.value).startswith('/sys/devices/system/cpu/online: '), str(info.value)
    assert message in str(info.value), str(info.value)


def test_systemd_show_output_is_space_separated():
    # systemctl show -p AllowedCPUs prints cpu_set_to_range_string(): "0-1 4-5"
    assert parse_systemd_cpulist('0-1 4-5') == frozenset({0, 1, 4, 5})
    assert parse_systemd_cpulist('0-1,4-5\n') == frozenset({0, 1, 4, 5})
    assert parse_systemd_cpulist('') == frozenset()
    with pytest.raises(CpuListError, match='empty item at character 5'):
        parse_systemd_cpulist('0-1  4', 'AllowedCPUs')
    with pytest.raises(CpuListError, match='whitespace'):
        parse_systemd_cpulist('0-1\t4', 'AllowedCPUs')


def test_show_text_makes_control_characters_visible():
    assert show_text('0\n\0\t\x1b') == '0\\n\\0\\t\\x1b'


def test_parse_rejects_non_strings():
    with pytest.raises(CpuListError, match='must be a cpulist string'):
        parse_cpulist(None)
    with pytest.raises(CpuListError, match='must be a cpulist string'):
        parse_cpulist(True)
    with pytest.raises(CpuListError, match='not a CPU number'):
        parse_cpulist([1, -2])
    assert parse_cpulist([3, 1]) == frozenset({1, 3})
    assert parse_cpulist(4) == frozenset({4})


@pytest.mark.parametrize('cpus, text', [
    ([], ''),
    ([0], '0'),
    ([0, 1], '0-1'),
    ([5, 0, 1, 2, 7, 6], '0-2,5-7'),
    (range(1024), '0-1023'),
    ([0, 2, 4], '0,2,4'),
])
def test_format(cpus, text):
    assert format_cpulist(cpus) == text


def test_canonical_round_trip():
    assert canonical('72-77,0-5,48-53,24-29') == '0-5,24-29,48-53,72-77'
    for text in ('0-5,24-29,48-53,72-77', '1,3,5-9', '0'):
        assert canonical(canonical(text)) == canonical(text)


def test_cpumap_round_trip():
    cpumap = to_cpumap({0, 2}, 4)
    assert cpumap == (True, False, True, False)
    assert from_cpumap(cpumap) == frozenset({0, 2})
    assert to_cpumap({7}, 4) == (False,) * 4


def test_hexmask():
    assert format_hexmask({0, 1, 40}) == '100,00000003'
    assert parse_hexmask('100,00000003') == frozenset({0, 1, 40})
    assert format_hexmask(set()) == '0'
    assert parse_hexmask(format_hexmask(range(96))) == frozenset(range(96))
    with pytest.raises(CpuListError, match='cannot parse hex mask'):
        parse_hexmask('xyz')
    assert parse_hexmask('3\n\0') == frozenset({0, 1})
    for bad in ('ff,,ff', ',ff', 'ff,', 'f f', '', '\0ff'):
        with pytest.raises(CpuListError, match='cannot parse hex mask'):
            parse_hexmask(bad, '/proc/irq/1/smp_affinity')
