#!/usr/bin/env python3
"""Checks what test/demo.sh left in its output directory; prints TAP.

    demo_check.py DEMO_OUTPUT [--first N]

- the photos are there, 1920x1080, one per clip;
- the contact sheet and the timeline are PNGs of the size their layout gives
  for the number of clips, transitions and compile jobs;
- the timeline's bars hold the phases a clip goes through, in order, and the
  compile comes after the last clip;
- a frame from the middle of each clip resembles the photo it came from more
  than any other photo (SSIM from ffmpeg's ssim filter on 320x180 grey
  frames), and a transition starts on its photo and ends on the next one;
- with native audio on, each clip's sound is a quiet room tone.
"""
import json
import os
import re
import subprocess
import sys

from PIL import Image

# The pictures' layout (test/demo_pictures.py): 3 tiles of 480x270 and a
# 46 px label per row, 12 px gaps; the timeline 1400 wide, 30 px a bar.
SHEET_W = 3 * 480 + 4 * 12
TIMELINE_W = 1400
N = 0


def tap(ok, name, diag=None):
    global N
    N += 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', N, name))
    if not ok and diag:
        for line in str(diag).splitlines():
            print('#   ' + line)
    return ok


def duration(f):
    out = subprocess.run(['ffprobe', '-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', f],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip())


def ssim(video, at, photo):
    """SSIM of the frame of `video` at `at` s (or the last one) against a photo."""
    seek = ['-sseof', '-0.1'] if at == 'last' else ['-ss', '%.3f' % at]
    r = subprocess.run(['ffmpeg', '-nostdin', '-v', 'info', *seek, '-i', video, '-i', photo, '-lavfi',
                        '[0:v]scale=320:180,format=gray[a];[1:v]scale=320:180,format=gray[b];[a][b]ssim',
                        '-frames:v', '1', '-f', 'null', '-'], capture_output=True, text=True)
    m = re.search(r'All:([0-9.]+)', r.stderr)
    if not m:
        raise RuntimeError('no SSIM from ffmpeg: ' + r.stderr[-300:])
    return float(m.group(1))


def loudness(video):
    r = subprocess.run(['ffmpeg', '-nostdin', '-v', 'info', '-i', video, '-af',
                        'astats=measure_overall=RMS_level:measure_perchannel=0', '-f', 'null', '-'],
                       capture_output=True, text=True)
    m = re.search(r'RMS level dB: (-?[0-9.inf]+)', r.stderr)
    return float(m.group(1)) if m else None


def main():
    out = sys.argv[1]
    global N
    if '--first' in sys.argv:
        N = int(sys.argv[sys.argv.index('--first') + 1]) - 1
    pics = json.load(open(os.path.join(out, 'pictures.json')))
    photos = sorted(f for f in os.listdir(os.path.join(out, 'photos')) if f.endswith('.jpg'))
    clips = sorted(f for f in os.listdir(os.path.join(out, 'clips')) if f.startswith('clip_'))
    trans = sorted(f for f in os.listdir(os.path.join(out, 'clips')) if f.startswith('transition_'))
    photo = lambda i: os.path.join(out, 'photos', 'photo_%d.jpg' % i)

    tap(len(photos) == len(clips) and len(clips) >= 2, 'one photo per clip (%d photos, %d clips)' % (len(photos), len(clips)))
    sizes = [Image.open(os.path.join(out, 'photos', p)).size for p in photos]
    tap(all(s == (1920, 1080) for s in sizes), 'the photos are 1920x1080', sizes)

    segs = len(clips) + len(trans)
    rows = (segs + 2) // 3
    want = (SHEET_W, rows * (270 + 46) + (rows + 1) * 12)
    sheet = Image.open(os.path.join(out, 'contact_sheet.png'))
    tap(sheet.format == 'PNG' and sheet.size == want, 'contact sheet: a PNG of %dx%d for %d segments' % (want + (segs,)),
        '%s %s' % (sheet.format, sheet.size))
    labels = [s['label'] for s in pics['segments']]
    times = [s['at'] for s in pics['segments']]
    tap(len(labels) == segs and times == sorted(times) and 0 < times[0] and times[-1] < pics['video_duration'],
        'contact sheet: each segment labelled with its room and a time inside the video', pics['segments'])

    bars = pics['bars']
    compiles = [b for b in bars if b['kind'] == 'compile']
    want = (TIMELINE_W, 64 + (len(clips) + len(trans) + len(compiles)) * 30 + 92)
    tl = Image.open(os.path.join(out, 'timeline.png'))
    tap(tl.format == 'PNG' and tl.size == want and len(compiles) >= 1,
        'timeline: a PNG of %dx%d, one bar per clip, transition and compile job' % want, '%s %s' % (tl.format, tl.size))
    order = ['upload', 'queue', 'generation', 'download', 'store']
    bad = []
    for b in bars:
        if b['kind'] == 'compile':
            continue
        phases = [p['phase'] for p in b['parts']]
        seen = [ph for i, ph in enumerate(phases) if i == 0 or phases[i - 1] != ph]
        starts = [p['start'] for p in b['parts']]
        if [ph for ph in order if ph in seen] != [ph for ph in seen if ph in order] or \
                not {'queue', 'generation', 'download', 'store'} <= set(seen) or starts != sorted(starts):
            bad.append((b['label'], seen))
    tap(not bad, 'timeline: every clip bar goes queue, generation, download, store in that order', bad)
    last_clip = max(p['end'] for b in bars if b['kind'] != 'compile' for p in b['parts'])
    first_compile = min(p['start'] for b in compiles for p in b['parts'])
    tap(first_compile >= last_clip - 0.5 and abs(pics['total_s'] - max(p['end'] for b in compiles for p in b['parts'])) < 0.01,
        'timeline: the compile starts after the last clip and ends the run (%.1f s)' % pics['total_s'],
        (first_compile, last_clip))

    for i, c in enumerate(clips):
        n = int(re.search(r'(\d+)', c).group(1))
        f = os.path.join(out, 'clips', c)
        mid = duration(f) / 2
        scores = [ssim(f, mid, photo(k)) for k in range(len(photos))]
        own = scores[n]
        tap(own > 0.5 and own == max(scores),
            'clip %d: its middle frame resembles its photo (SSIM %.3f; other photos at most %.3f)'
            % (n, own, max(scores[:n] + scores[n + 1:] or [0])), scores)
    for t in trans:
        n = int(re.search(r'(\d+)', t).group(1))
        f = os.path.join(out, 'clips', t)
        a, b = ssim(f, 0, photo(n)), ssim(f, 'last', photo(n + 1))
        tap(a > 0.9 and b > 0.9, 'transition %d: starts on photo %d (SSIM %.3f) and ends on photo %d (SSIM %.3f)'
            % (n, n, a, n + 1, b))

    if os.environ.get('DEMO_NATIVE_AUDIO', 'true') == 'true':
        levels = [loudness(os.path.join(out, 'clips', c)) for c in clips]
        tap(all(lv is not None and -60 < lv < -30 for lv in levels),
            'native audio: every clip has a quiet room tone (RMS %s dBFS)' % ', '.join('%.0f' % (lv or 0) for lv in levels), levels)
    print('1..%d' % N)
    return 0


if __name__ == '__main__':
    sys.exit(main())
