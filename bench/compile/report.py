#!/usr/bin/env python3
"""Turns the rows of bench/compile/run.sh (results.tsv) into the markdown of
results.md: the targets, then every command's median figures.

    python3 report.py results.tsv "settings line"
"""
import collections
import datetime
import os
import statistics
import subprocess
import sys

rows = collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    f = line.rstrip('\n').split('\t')
    if len(f) < 10:
        continue
    group, n, name, rc = f[0], int(f[1]), f[2], int(f[3])
    key = (group, n, name)
    if key not in rows:
        order.append(key)
    rows[key].append({'rc': rc, 'wall': float(f[4] or 'nan'), 'cpu': float(f[5] or 'nan'),
                      'rss': int(f[6] or 0) / 1024, 'v': f[7], 'a': f[8], 'size': int(f[9] or 0),
                      'other': float(f[10]) if len(f) > 10 and f[10] else 0.0})


def fig(key):
    r = rows.get(key)
    if not r:
        return None
    good = [x for x in r if x['rc'] == 0]
    if not good:
        return {'failed': True, 'runs': len(r)}
    return {'failed': len(good) < len(r), 'runs': len(good),
            'wall': statistics.median(x['wall'] for x in good),
            'cpu': statistics.median(x['cpu'] for x in good),
            'rss': max(x['rss'] for x in good),
            'other': statistics.median(x['other'] for x in good),
            'v': good[-1]['v'], 'a': good[-1]['a'], 'size': good[-1]['size']}


def dur(s):
    try:
        return '%.3f' % float(s)
    except ValueError:
        return '-'


# (group, our row, compared with, target ratio or None, memory limit MiB, what)
H, NT = 'hagen-compile', 'hagen-compile_nothumb'
TARGETS = [
    ('music', H, 'copyv_mixfix', 1.0, 150, 'with music: >= as fast as copyv_mixfix'),
    ('music', NT, 'copyv_mixfix', None, None, 'with music, no thumbnail, against copyv_mixfix'),
    ('music', H, 'refmusic', None, None, 'with music, against the reference re-encode'),
    ('audio', H, 'copyv_aac', 1.0, 150, 'clip audio, no music: <= copyv_aac'),
    ('audio', NT, 'copyv_aac', None, None, 'clip audio, no thumbnail, against copyv_aac'),
    ('audio', H, 'ref', None, None, 'clip audio, no music, against the reference re-encode'),
    ('silent', H, 'copy', 1.5, 150, 'silent clips (pure copy): within 1.5x of -c copy'),
    ('silent', NT, 'copy', None, None, 'silent clips, no thumbnail, against -c copy'),
    ('silent', H, 'copy_faststart', None, None, 'silent clips, against -c copy +faststart'),
    ('normalize', H, 'ref', 1.0, 500, 'normalise (7 mixed clips): <= reference'),
    ('normalize', H, 'concat_filter', None, None, 'normalise, against the correct CLI (concat filter)'),
    ('crossfade', H, 'xfade', 1.0, None, 'crossfade 0.5 s at every cut: <= the xfade + acrossfade chain'),
]
CORES = os.cpu_count() or 1


def busy_note(f):
    """A mark when other work took over 10 % of the machine during the runs."""
    if f and 'wall' in f and f['other'] > max(0.1 * CORES * f['wall'], 0.5):
        return ' (busy: others used %.1f CPU s)' % f['other']
    return ''

out = []
p = subprocess.run(['ffmpeg', '-version'], capture_output=True, text=True)
ver = p.stdout.splitlines()[0] if p.stdout else 'ffmpeg ?'
out.append('# hagen-compile benchmark\n')
out.append('%s, %s, %d cores; %s.  Settings: %s.  Wall = median of the runs; RSS = the largest '
           'peak (`/usr/bin/time -v`); ratio = hagen-compile wall / the other command\'s wall; '
           '"busy" marks figures taken while other work used over 10 %% of the machine (and 0.5 CPU s).\n'
           % (datetime.date.today().isoformat(), os.uname().nodename, os.cpu_count(), ver, sys.argv[2]
              if len(sys.argv) > 2 else ''))
out.append('| case | N | hagen-compile s | RSS MiB | against | its s | its RSS MiB | ratio | target | met |')
out.append('|---|---|---|---|---|---|---|---|---|---|')
sizes = sorted({n for _, n, _ in order})
for group, ours, other, target, mem, what in TARGETS:
    for n in sizes:
        a, b = fig((group, n, ours)), fig((group, n, other))
        if not a or not b:
            continue
        if a.get('failed') and 'wall' not in a:
            out.append('| %s | %d | **failed** | | %s | | | | | no |' % (what, n, other))
            continue
        if 'wall' not in b:
            continue
        ratio = a['wall'] / b['wall'] if b['wall'] > 0 else float('nan')
        met = ''
        if target is not None:
            ok = ratio <= target and (mem is None or a['rss'] < mem)
            met = 'yes' if ok else '**no**'
        tgt = ('<= %.1fx' % target + (', < %d MiB' % mem if mem else '')) if target is not None else ''
        out.append('| %s | %d | %.2f%s | %.0f | %s | %.2f%s | %.0f | %.2fx | %s | %s |'
                   % (what, n, a['wall'], busy_note(a), a['rss'], other, b['wall'], busy_note(b), b['rss'],
                      ratio, tgt, met))
out.append('')
out.append('Every command (runs = successful runs whose median is shown; durations from ffprobe of the '
           'output):\n')
out.append('| case | N | command | runs | wall s | CPU s | RSS MiB | out MB | video s | audio s | others\' CPU s |')
out.append('|---|---|---|---|---|---|---|---|---|---|---|')
for key in order:
    f = fig(key)
    if 'wall' not in f:
        out.append('| %s | %d | %s | 0 of %d | failed | | | | | | |' % (key[0], key[1], key[2], f['runs']))
        continue
    out.append('| %s | %d | %s | %d%s | %.2f | %.1f | %.0f | %.1f | %s | %s | %.1f |'
               % (key[0], key[1], key[2], f['runs'], ' (some failed)' if f['failed'] else '', f['wall'],
                  f['cpu'], f['rss'], f['size'] / 1e6, dur(f['v']), dur(f['a']), f['other']))
print('\n'.join(out))
