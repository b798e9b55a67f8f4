#!/usr/bin/env python3
"""The cases of test/compile/run.sh: hagen-compile against its CLI contract.

    python3 cases.py [--first N] FIXTURE_DIR HAGEN_COMPILE [CASE...]

Prints TAP lines ("ok N - ...", "not ok N - ...", "# ..."), numbered from N.
Every figure is checked with the ffmpeg CLI or by reading the bytes
(media.py) beside what hagen-compile itself reports.  Fixtures: fixtures.sh.
"""

import json
import os
import shutil
import subprocess
import sys
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from media import (RATE, Pcm, db, dominant_freq, ffprobe_streams, flashes, gray,  # noqa: E402
                   mean_region, moov_first, packet_hashes, rms_db, run, stream, stream_end,
                   tone_amp, video_frames)

FRAME = 1 / 24          # one video frame of the fixtures
SILENT_DB = -50         # below this a window counts as silence
AUDIBLE_DB = -40        # above this a window counts as sound


class Tap:
    def __init__(self, first):
        self.n = first - 1
        self.failed = 0

    def ok(self, cond, desc, *diag):
        self.n += 1
        if cond:
            print('ok %d - %s' % (self.n, desc))
        else:
            self.failed += 1
            print('not ok %d - %s' % (self.n, desc))
            for d in diag:
                for line in str(d).splitlines() or ['']:
                    print('#   ' + line)
        sys.stdout.flush()
        return bool(cond)

    def near(self, got, want, tol, desc):
        good = got is not None and want is not None and abs(got - want) <= tol
        return self.ok(good, desc, 'got %s, want %s within %s' % (_fmt(got), _fmt(want), tol))


def _fmt(x):
    return '%.4f' % x if isinstance(x, float) else repr(x)


t = None
FX = HC = OUT = None


class Run:
    """One hagen-compile invocation: exit status and its JSON lines."""

    def __init__(self, args, timeout=240):
        try:
            p = subprocess.run([HC] + args, capture_output=True, timeout=timeout)
            self.rc, out, self.stderr = p.returncode, p.stdout.decode(errors='replace'), \
                p.stderr.decode(errors='replace')
        except subprocess.TimeoutExpired as e:
            self.rc, out, self.stderr = 'timeout', (e.stdout or b'').decode(errors='replace'), ''
        self.stdout = out
        self.lines, self.bad_lines = [], []
        for line in out.splitlines():
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.bad_lines.append(line)
        last = self.lines[-1] if self.lines else {}
        self.result = last.get('result') if isinstance(last, dict) else None
        self.error = last.get('error') if isinstance(last, dict) else None
        self.last = last

    def why(self):
        return 'exit %s; last stdout line: %s; stderr: %s' % (
            self.rc, self.stdout.strip().splitlines()[-1:] or '(none)', self.stderr.strip()[-400:])


def fx(name):
    return os.path.join(FX, name)


def seg_dicts(segments):
    """Manifest segments from (file, label[, kind[, crossfade]])."""
    return [dict({'file': f if f.startswith('/') else fx(f), 'kind': k[0] if k else 'clip',
                  'label': label}, **({'crossfade': k[1]} if len(k) > 1 else {}))
            for f, label, *k in segments]


def compile_(name, segments, music=None, music_volume=0.3, video_volume=1.0, aspect='16:9',
             thumbnail=True, mode=None, raw=None, extra=None):
    """Writes OUT/name.json and runs compile; segments are (file, label[, kind[, crossfade]]);
    extra: more keys of the manifest (a task, threads)."""
    out = os.path.join(OUT, name + '.mp4')
    thumb = os.path.join(OUT, name + '.jpg')
    for f in (out, thumb):
        if os.path.exists(f):
            os.unlink(f)
    if raw is None:
        m = {'segments': seg_dicts(segments),
             'music': {'file': fx(music), 'volume': music_volume} if music else None,
             'video_volume': video_volume, 'aspect_ratio': aspect, 'output': out}
        if thumbnail:
            m['thumbnail'] = thumb
        if mode:
            m['mode'] = mode
        m.update(extra or {})
        text = json.dumps(m, indent=1)
    else:
        text = raw
    path = os.path.join(OUT, name + '.json')
    with open(path, 'w') as f:
        f.write(text)
    r = Run(['compile', path])
    r.output, r.thumb, r.manifest = out, thumb, path
    return r


def must_compile(r, desc):
    """The compile succeeded with a result line; the case stops if not."""
    good = r.rc == 0 and r.result is not None and not r.bad_lines
    t.ok(good, desc + ': exit 0 and a result line', r.why(),
         *(['non-JSON stdout: %r' % r.bad_lines[:3]] if r.bad_lines else []))
    return good and os.path.exists(r.output)


def check_progress(r, nsegs, desc):
    prog = [x for x in r.lines if isinstance(x, dict) and 'progress' in x]
    values = [x['progress'] for x in prog]
    segs = sorted({x['segment'] for x in prog if 'segment' in x})
    t.ok(prog and all(0 <= v <= 1 for v in values) and values == sorted(values)
         and segs == list(range(1, nsegs + 1)),
         desc + ': progress lines rise within 0..1 and name every segment 1..%d' % nsegs,
         'progress %s' % values[:5] + ('...%s' % values[-3:] if len(values) > 5 else ''),
         'segments named: %s' % segs)


def check_output_file(r, desc, want_dur, want_frames=None, want_audio=True, want_size=None):
    """Common checks of a compiled MP4 with ffprobe; returns (video, audio)."""
    st = ffprobe_streams(r.output)
    v, a = stream(st, 'video'), stream(st, 'audio')
    t.ok(moov_first(r.output), desc + ': moov before mdat (faststart), read from the bytes')
    t.near(float(v['duration']), want_dur, FRAME, desc + ': ffprobe video duration = sum of segments')
    if want_frames is not None:
        t.ok(abs(int(v['nb_read_packets']) - want_frames) <= (0 if r.result.get('mode') != 'normalize' else 1),
             desc + ': video frame count = sum of segments (%d)' % want_frames,
             'ffprobe counted %s packets' % v['nb_read_packets'])
    t.near(r.result.get('duration'), want_dur, FRAME, desc + ': result duration = sum of segments')
    rv = r.result.get('video')
    t.ok(isinstance(rv, dict) and rv.get('codec') == 'h264' and rv.get('width') == int(v['width'])
         and rv.get('height') == int(v['height']) and r.result.get('size') == os.path.getsize(r.output),
         desc + ': result video object (h264, size) and file size agree with the file',
         'result video %r, size %r (file %d)' % (rv, r.result.get('size'), os.path.getsize(r.output)))
    if want_size:
        t.ok((int(v['width']), int(v['height'])) == want_size
             and (r.result.get('width'), r.result.get('height')) == want_size,
             desc + ': size %dx%d in the file and the result' % want_size,
             'ffprobe %sx%s, result %sx%s' % (v['width'], v['height'], r.result.get('width'),
                                              r.result.get('height')))
    if want_audio:
        good = a is not None and a['codec_name'] == 'aac' and int(a['sample_rate']) == 48000 \
            and int(a['channels']) == 2
        t.ok(good, desc + ': an AAC 48 kHz stereo track', 'audio stream: %s' % a)
        if a is not None:
            t.near(stream_end(a), stream_end(v), FRAME,
                   desc + ': audio ends within a frame of the video (ffprobe)')
            ra = r.result.get('audio')
            t.ok(isinstance(ra, dict) and ra.get('codec') == 'aac' and ra.get('sample_rate') == 48000
                 and ra.get('channels') == 2, desc + ': result audio object: aac, 48000, 2 channels',
                 'result audio: %r' % ra)
    else:
        t.ok(a is None and r.result.get('audio') is None, desc + ': no audio track, result audio null',
             'ffprobe audio: %s; result audio: %r' % (a, r.result.get('audio')))
    return v, a


def seg_starts(r):
    return [s.get('start') for s in r.result.get('segments', [])]


def cumsum(durs):
    out, s = [], 0.0
    for d in durs:
        out.append(s)
        s += d
    return out


def probe(path, *more):
    r = Run(['probe', path] + list(more))
    return r, (r.last if r.rc == 0 and isinstance(r.last, dict) and 'streams' in r.last else None)


# ---------------------------------------------------------------------------

def case_probe():
    """9. probe: the fields of a fixture, faststart, --decode, errors."""
    path = fx('tone1.mp4')
    r, j = probe(path)
    if not t.ok(j is not None and len(r.lines) == 1, 'probe: exit 0 and one JSON object', r.why()):
        return
    ref = ffprobe_streams(path)
    rv, ra = stream(ref, 'video'), stream(ref, 'audio')
    t.ok(j.get('file') == path and j.get('format') == 'mov,mp4,m4a,3gp,3g2,mj2'
         and j.get('size') == os.path.getsize(path),
         'probe: file, format and size', 'got file %r format %r size %r (stat %d)' % (
             j.get('file'), j.get('format'), j.get('size'), os.path.getsize(path)))
    t.near(j.get('duration'), 2.0, 0.03, 'probe: duration')
    t.ok(j.get('faststart') is False, 'probe: faststart false for a file with moov at the end',
         'faststart %r; atoms say moov first: %s' % (j.get('faststart'), moov_first(path)))
    s = j.get('streams') or []
    v = next((x for x in s if x.get('type') == 'video'), {})
    a = next((x for x in s if x.get('type') == 'audio'), {})
    want_v = {'index': int(rv['index']), 'codec': 'h264', 'profile': 'High', 'width': 320,
              'height': 180, 'sar': '1:1', 'pix_fmt': 'yuv420p', 'time_base': rv['time_base'],
              'frames': int(rv['nb_read_packets'])}
    t.ok(all(v.get(k) == w for k, w in want_v.items()) and v.get('fps') == 24,
         'probe: video stream fields agree with ffprobe', 'got %r' % v, 'want %r, fps 24' % want_v)
    t.near(v.get('duration'), float(rv['duration']), 0.001, 'probe: video duration')
    want_a = {'index': int(ra['index']), 'codec': 'aac', 'sample_rate': 48000, 'channels': 2}
    t.ok(all(a.get(k) == w for k, w in want_a.items()), 'probe: audio stream fields',
         'got %r' % a, 'want %r' % want_a)
    t.near(a.get('duration'), float(ra['duration']), 0.03, 'probe: audio duration')

    r, j = probe(fx('tone1_fs.mp4'))
    t.ok(j is not None and j.get('faststart') is True,
         'probe: faststart true for the same file remuxed with +faststart', r.why())
    r, j = probe(fx('n30.mp4'))
    v = next((x for x in (j or {}).get('streams', []) if x.get('type') == 'video'), {})
    t.ok(v.get('fps') == 30 and v.get('time_base') == '1/15360',
         'probe: a 30 fps clip reports fps 30 and time base 1/15360', 'got %r' % v)
    r, j = probe(fx('nmono.mp4'))
    a = next((x for x in (j or {}).get('streams', []) if x.get('type') == 'audio'), {})
    t.ok(a.get('sample_rate') == 44100 and a.get('channels') == 1,
         'probe: a 44.1 kHz mono track reports 44100 / 1 channel', 'got %r' % a)
    r, j = probe(fx('music_long.mp3'))
    t.ok(j is not None and j.get('faststart') is None and
         [x.get('type') for x in j.get('streams', [])] == ['audio'],
         'probe: an MP3 has faststart null and one audio stream', r.why())
    r, j = probe(fx('mute1.mp4'))
    t.ok(j is not None and [x.get('type') for x in j.get('streams', [])] == ['video'],
         'probe: a clip without audio lists only its video stream', r.why())

    r, j = probe(path, '--decode')
    d = (j or {}).get('decoded') or {}
    t.ok(d.get('video_frames') == int(rv['nb_read_packets']),
         'probe --decode: video_frames = the frames ffprobe counts (%s)' % rv['nb_read_packets'],
         'decoded %r' % d)
    t.near(d.get('video_end'), 2.0, 0.001, 'probe --decode: video_end')
    # The source's end trim (edit list) may be lost: at most one AAC frame more.
    t.ok(d.get('audio_samples') is not None and 96000 - 1024 <= d['audio_samples'] <= 96000 + 1024,
         'probe --decode: audio_samples = 2 s x 48000 within one AAC frame', 'decoded %r' % d)
    t.near(d.get('audio_end'), 2.0, 0.03, 'probe --decode: audio_end')

    for name, what in (('bad_text.mp4', 'a text file'), ('bad_empty.mp4', 'an empty file'),
                       ('missing.mp4', 'a missing file'), ('bad_trunc.mp4', 'a truncated MP4')):
        r, j = probe(fx(name))
        t.ok(r.rc == 1 and r.error is not None and isinstance(r.error.get('message'), str)
             and r.error['message'] and len(r.lines) == 1 and not r.bad_lines,
             'probe: %s fails with exit 1 and one {"error":{"message"}} line' % what, r.why())


def case_copy_video():
    """1. Same parameters, clip audio, no music: copy_video, exact sums, no attenuation."""
    segs = [('tone1.mp4', 'Living room'), ('tone2.mp4', 'Kitchen'), ('tone3.mp4', 'Garden')]
    durs, freqs, frames = [2.0, 1.5, 1.0], [330, 440, 550], 48 + 36 + 24
    r = compile_('case1', segs)
    if not must_compile(r, 'copy_video'):
        return
    t.ok(r.result.get('mode') == 'copy_video', 'copy_video: mode is copy_video',
         'mode %r' % r.result.get('mode'))
    check_progress(r, 3, 'copy_video')
    v, a = check_output_file(r, 'copy_video', sum(durs), frames, want_size=(320, 180))
    t.ok([s.get('label') for s in r.result.get('segments', [])] == [s[1] for s in segs],
         'copy_video: result segments in manifest order with their labels', r.result.get('segments'))
    starts = seg_starts(r)
    t.ok(len(starts) == 3 and all(abs(x - y) < 0.002 for x, y in zip(starts, cumsum(durs))),
         'copy_video: segment starts 0, 2, 3.5', 'got %r' % starts)
    t.ok([round(s.get('duration', 0), 3) for s in r.result['segments']] == durs,
         'copy_video: segment durations 2, 1.5, 1', r.result['segments'])
    _, j = probe(r.output)
    t.ok(j is not None and j.get('faststart') is True, 'copy_video: probe says faststart true')
    _, j = probe(r.output, '--decode')
    d = (j or {}).get('decoded') or {}
    t.ok(d.get('video_frames') == frames, 'copy_video: decoded video frames = %d' % frames, d)
    t.ok(d.get('audio_samples') is not None and abs(d['audio_samples'] - sum(durs) * RATE) <= RATE * FRAME,
         'copy_video: decoded audio samples = duration x 48000 within one frame', d)
    t.ok(packet_hashes(r.output) == sum((packet_hashes(fx(f)) for f, _ in segs), []),
         'copy_video: video packets byte-identical to the segments\' (framemd5)')
    if a is None:
        return
    pcm = Pcm(r.output)
    bad = []
    for (f, label), start, dur, freq in zip(segs, cumsum(durs), durs, freqs):
        src = Pcm(fx(f))
        w_in, w_out = src.win(0.2, dur - 0.2), pcm.win(start + 0.2, start + dur - 0.2)
        l_in, l_out = rms_db(w_in), rms_db(w_out)
        g_in, g_out = db(tone_amp(w_in, freq)), db(tone_amp(w_out, freq))
        if abs(l_in - l_out) > 1 or abs(g_in - g_out) > 1:
            bad.append('%s: RMS %.2f dB in, %.2f dB out; %d Hz %.2f dB in, %.2f out'
                       % (label, l_in, l_out, freq, g_in, g_out))
    t.ok(not bad, 'copy_video: each clip\'s audio keeps its level and tone within 1 dB', *bad)


def case_sync():
    """2. No drift at boundaries: flash and beep stay together over 6 clips."""
    n = 6
    segs = [('sync%d.mp4' % i, 'Room %d' % i) for i in range(1, n + 1)]
    r = compile_('case2', segs, thumbnail=False)
    d = 2.5
    if not must_compile(r, 'sync'):
        return
    t.ok(r.result.get('mode') == 'copy_video', 'sync: mode copy_video', r.result.get('mode'))
    v, a = check_output_file(r, 'sync', d * n, 60 * n)
    if a is None:
        return
    starts = cumsum([d] * n)
    fl = flashes(r.output)
    on = Pcm(r.output).onsets()
    t.ok(len(fl) == n and all(abs(f - s - 0.5) < FRAME / 2 for f, s in zip(fl, starts)),
         'sync: one flash per clip at its start + 0.5 s', 'flashes at %s' % [round(x, 3) for x in fl])
    t.ok(len(on) == n and all(abs(o - s - 0.5) < FRAME for o, s in zip(on, starts)),
         'sync: one beep per clip at its start + 0.5 s (within a frame)',
         'beep onsets at %s' % [round(x, 4) for x in on])
    rs = seg_starts(r)
    t.ok(len(rs) == n and all(abs(x - y) < 0.002 for x, y in zip(rs, starts)),
         'sync: result segment starts are multiples of 2.5 s', rs)
    offs = [o - f for o, f in zip(on, fl)]
    t.ok(len(offs) == n and all(abs(x) < FRAME for x in offs),
         'sync: |beep - flash| < one frame at every boundary (no drift)',
         'beep - flash, ms: %s' % [round(x * 1000, 1) for x in offs])
    _, j = probe(r.output, '--decode')
    dec = (j or {}).get('decoded') or {}
    t.ok(dec.get('audio_samples') is not None and abs(dec['audio_samples'] - d * n * RATE) <= RATE * FRAME,
         'sync: decoded audio samples = %d within one frame\'s worth' % (d * n * RATE), dec)
    t.near(dec.get('audio_end'), dec.get('video_end'), FRAME, 'sync: decoded audio end = video end within a frame')


def case_copy():
    """3. Silent clips, no music: copy; one clip with audio: copy with its audio."""
    segs = [('mute1.mp4', 'Front'), ('mute2.mp4', 'Hall'), ('mute3.mp4', 'Back')]
    r = compile_('case3', segs)
    if must_compile(r, 'copy'):
        t.ok(r.result.get('mode') == 'copy', 'copy: mode copy', r.result.get('mode'))
        check_output_file(r, 'copy', 6.0, 144, want_audio=False, want_size=(320, 180))
        t.ok(packet_hashes(r.output) == sum((packet_hashes(fx(f)) for f, _ in segs), []),
             'copy: video packets byte-identical, in order (framemd5)')
    r = compile_('case3b', [('tone1.mp4', 'Only')])
    if must_compile(r, 'copy, one clip with audio'):
        t.ok(r.result.get('mode') == 'copy', 'copy, one clip with audio: mode copy', r.result.get('mode'))
        check_output_file(r, 'copy, one clip with audio', 2.0, 48)
        t.ok(packet_hashes(r.output) == packet_hashes(fx('tone1.mp4')),
             'copy, one clip with audio: video packets byte-identical')
        t.ok(packet_hashes(r.output, 'a') == packet_hashes(fx('tone1.mp4'), 'a'),
             'copy, one clip with audio: audio packets byte-identical')
    r = compile_('case3c', [('tone1.mp4', 'Only')], video_volume=0.5, thumbnail=False)
    if must_compile(r, 'one clip at video_volume 0.5'):
        t.ok(r.result.get('mode') == 'copy_video', 'one clip at video_volume 0.5: mode copy_video '
             '(its audio must be scaled)', r.result.get('mode'))
        g_in = db(tone_amp(Pcm(fx('tone1.mp4')).win(0.2, 1.8), 330))
        t.near(db(tone_amp(Pcm(r.output).win(0.2, 1.8), 330)), g_in + db(0.5), 1.0,
               'one clip at video_volume 0.5: its tone 6 dB lower')


def case_music():
    """4. Music: looped when short, trimmed when long, volume, fade-out."""
    mute = [('mute1.mp4', 'Front'), ('mute2.mp4', 'Hall'), ('mute3.mp4', 'Back')]
    total = 6.0
    mus = Pcm(fx('music_short.mp3'))
    music_db = rms_db(mus.win(0.2, 1.2))

    r = compile_('case4a', mute, music='music_short.mp3', music_volume=0.5, thumbnail=False)
    if must_compile(r, 'music shorter than the video'):
        t.ok(r.result.get('mode') == 'copy_video', 'music short: mode copy_video', r.result.get('mode'))
        v, a = check_output_file(r, 'music short', total, 144)
        if a:
            pcm = Pcm(r.output)
            levels = [(x / 4, rms_db(pcm.win(x / 4, x / 4 + 0.25))) for x in range(0, int((total - 1) * 4))]
            quiet = ['%.2f s: %.1f dB' % (x, l) for x, l in levels if l < AUDIBLE_DB]
            t.ok(not quiet, 'music short: sound in every quarter second up to 1 s before the end (looped)',
                 *quiet)
            mid = rms_db(pcm.win(2.5, 3.5))
            t.near(mid, music_db + db(0.5), 1.5, 'music short: level = music level x volume 0.5 (dB)')
            t.ok(abs(dominant_freq(pcm.win(3.0, 3.5), 800, 960) - 880) <= 3,
                 'music short: the music keeps its 880 Hz pitch after looping')
            tail = rms_db(pcm.win(total - 0.3, total))
            t.ok(tail < mid - 3, 'music short: faded out (last 0.3 s at least 3 dB below the middle)',
                 'middle %.1f dB, last 0.3 s %.1f dB' % (mid, tail))

    r = compile_('case4b', mute, music='music_long.mp3', music_volume=1.0, thumbnail=False)
    loud = None
    if must_compile(r, 'music longer than the video'):
        v, a = check_output_file(r, 'music long', total, 144)
        if a:
            t.ok(float(a['duration']) <= total + FRAME, 'music long: trimmed to the video',
                 'audio %s s' % a['duration'])
            pcm = Pcm(r.output)
            loud = rms_db(pcm.win(2.5, 3.5))
            t.near(loud, rms_db(Pcm(fx('music_long.mp3')).win(2.5, 3.5)), 1.5,
                   'music long: volume 1.0 keeps the music level')
    r = compile_('case4c', mute, music='music_long.mp3', music_volume=0.25, thumbnail=False)
    if must_compile(r, 'music at volume 0.25') and loud is not None:
        soft = rms_db(Pcm(r.output).win(2.5, 3.5))
        t.near(loud - soft, -db(0.25), 1.5, 'music volume: 1.0 is 12 dB louder than 0.25')

    tones = [('tone1.mp4', 'Living room'), ('tone2.mp4', 'Kitchen'), ('tone3.mp4', 'Garden')]
    durs, freqs = [2.0, 1.5, 1.0], [330, 440, 550]
    for name, vv, mv in (('case4d', 1.0, 0.5), ('case4e', 0.5, None)):
        what = 'clip audio x video_volume %.1f%s' % (vv, ' + music' if mv else ', no music')
        r = compile_(name, tones, music='music_long.mp3' if mv else None, music_volume=mv or 0,
                     video_volume=vv, thumbnail=False)
        if not must_compile(r, what):
            continue
        t.ok(r.result.get('mode') == 'copy_video', what + ': mode copy_video', r.result.get('mode'))
        pcm = Pcm(r.output)
        bad = []
        for (f, label), start, dur, freq in zip(tones, cumsum(durs), durs, freqs):
            g_in = db(tone_amp(Pcm(fx(f)).win(0.2, dur - 0.2), freq))
            g_out = db(tone_amp(pcm.win(start + 0.2, start + dur - 0.2), freq))
            if abs(g_out - (g_in + db(vv))) > 1:
                bad.append('%s %d Hz: %.2f dB in, %.2f dB out, want %.2f'
                           % (label, freq, g_in, g_out, g_in + db(vv)))
        t.ok(not bad, what + ': each clip tone at its level x video_volume within 1 dB (not halved)', *bad)
        if mv:
            m_in = db(tone_amp(Pcm(fx('music_long.mp3')).win(1.0, 1.5), 880))
            m_out = db(tone_amp(pcm.win(1.0, 1.5), 880))
            t.near(m_out, m_in + db(mv), 1.0, what + ': music tone at its level x volume (dB)')


def case_normalize():
    """5. Mixed fps, sizes, no audio first, 44.1 kHz mono: normalize."""
    segs = [('mute1.mp4', 'Front'), ('n30.mp4', 'Porch'), ('n916.mp4', 'Hall'),
            ('n11.mp4', 'Bath'), ('nmono.mp4', 'Garden')]
    durs = [2.0, 1.5, 1.5, 1.0, 1.5]
    starts = cumsum(durs)
    total = sum(durs)
    for aspect, ratio in (('16:9', 16 / 9), ('9:16', 9 / 16), ('1:1', 1.0)):
        what = 'normalize %s' % aspect
        r = compile_('case5_' + aspect.replace(':', 'x'), segs, aspect=aspect, thumbnail=False)
        if not must_compile(r, what):
            continue
        t.ok(r.result.get('mode') == 'normalize', what + ': mode normalize', r.result.get('mode'))
        v, a = check_output_file(r, what, total, round(total * 24))
        w, h = int(v['width']), int(v['height'])
        t.ok(abs(w / h - ratio) / ratio < 0.01 and w % 2 == 0 and h % 2 == 0
             and (r.result.get('width'), r.result.get('height')) == (w, h),
             what + ': output %dx%d has the target aspect ratio, even sides, as in the result' % (w, h),
             'result %sx%s' % (r.result.get('width'), r.result.get('height')))
        t.ok(v['codec_name'] == 'h264' and v['pix_fmt'] == 'yuv420p' and v['r_frame_rate'] == '24/1',
             what + ': H.264 yuv420p at the common 24 fps',
             'got %s %s %s' % (v['codec_name'], v['pix_fmt'], v['r_frame_rate']))
        sei = open(r.output, 'rb').read()
        k = sei.find(b'x264 - core')
        opts = sei[k:k + 2000].split(b'\0')[0].decode('latin-1') if k >= 0 else ''
        t.ok(' crf=23.0 ' in opts and ' subme=6 ' in opts and ' ref=2 ' in opts,
             what + ': encoded by x264 with CRF 23, preset fast (subme=6 ref=2 in its SEI)',
             'x264 SEI: %s' % (opts[:300] or 'not found'))
        rs = seg_starts(r)
        t.ok(len(rs) == 5 and all(abs(x - y) <= FRAME for x, y in zip(rs, starts)),
             what + ': segment starts within a frame of 0, 2, 3.5, 5, 6', rs)
        if a is None:
            continue
        pcm = Pcm(r.output)
        if aspect == '16:9':
            t.ok(rms_db(pcm.win(0.05, 1.95)) < SILENT_DB,
                 what + ': silence under the first clip, which has no audio',
                 '%.1f dB' % rms_db(pcm.win(0.05, 1.95)))
            fl = [f for f in flashes(r.output) if 2.0 <= f < 3.5]
            on = [o for o in pcm.onsets() if 2.0 <= o < 3.5]
            t.ok(len(fl) == 1 and len(on) == 1 and abs(fl[0] - 2.5) <= FRAME and abs(on[0] - 2.5) < FRAME
                 and abs(on[0] - fl[0]) < FRAME,
                 what + ': the 30 fps clip\'s flash and beep stay at 2.5 s, within a frame of each other',
                 'flashes %s, beeps %s' % (fl, on))
            win_l, win_r = pcm.win(6.2, 7.3, 0), pcm.win(6.2, 7.3, 1)
            f0 = dominant_freq(win_l[:24000], 560, 800)
            t.ok(abs(f0 - 660) <= 5, what + ': the 44.1 kHz mono clip keeps its 660 Hz pitch',
                 'strongest tone %d Hz' % f0)
            src = db(tone_amp(Pcm(fx('nmono.mp4')).win(0.2, 1.3), 660))
            lv, rv = db(tone_amp(win_l, 660)), db(tone_amp(win_r, 660))
            t.ok(abs(lv - rv) < 1 and abs(lv - src) < 1.5,
                 what + ': the mono clip plays on both channels at its level',
                 'left %.1f dB, right %.1f dB, source %.1f dB' % (lv, rv, src))
            for (f, label), start, dur, freq in ((segs[2], starts[2], durs[2], 440),
                                                 (segs[3], starts[3], durs[3], 550)):
                g_in = db(tone_amp(Pcm(fx(f)).win(0.2, dur - 0.2), freq))
                g_out = db(tone_amp(pcm.win(start + 0.2, start + dur - 0.2), freq))
                t.near(g_out, g_in, 1.0, what + ': %s\'s %d Hz tone in place at its level (dB)' % (label, freq))
            gw, gh, px = gray(r.output, starts[2] + 0.75)
            edge = max(mean_region(gw, gh, px, 0, 0.15, 0.1, 0.9), mean_region(gw, gh, px, 0.85, 1, 0.1, 0.9))
            mid = mean_region(gw, gh, px, 0.4, 0.6, 0.1, 0.9)
            t.ok(edge < 25 and mid > 40, what + ': the 9:16 clip is pillarboxed, not stretched',
                 'edge luma %.0f, centre luma %.0f' % (edge, mid))
        if aspect == '9:16':
            gw, gh, px = gray(r.output, 1.0)
            edge = max(mean_region(gw, gh, px, 0.1, 0.9, 0, 0.15), mean_region(gw, gh, px, 0.1, 0.9, 0.85, 1))
            mid = mean_region(gw, gh, px, 0.1, 0.9, 0.45, 0.55)
            t.ok(edge < 25 and mid > 40, what + ': a 16:9 clip is letterboxed, not stretched',
                 'edge luma %.0f, centre luma %.0f' % (edge, mid))

    r = compile_('case5_forced', [('tone1.mp4', 'A'), ('tone2.mp4', 'B')], mode='normalize',
                 thumbnail=False)
    if must_compile(r, 'mode "normalize" forced'):
        t.ok(r.result.get('mode') == 'normalize', 'forced normalize: mode normalize', r.result.get('mode'))
        check_output_file(r, 'forced normalize', 3.5, 84, want_size=(320, 180))


def case_transitions():
    """6. Transitions without audio between clips with audio."""
    segs = [('tone1.mp4', 'Living room'), ('trans1.mp4', 'to kitchen', 'transition'),
            ('tone2.mp4', 'Kitchen'), ('trans2.mp4', 'to garden', 'transition'), ('tone3.mp4', 'Garden')]
    durs = [2.0, 1.0, 1.5, 1.0, 1.0]
    starts = cumsum(durs)
    r = compile_('case6', segs, thumbnail=False)
    if not must_compile(r, 'transitions'):
        return
    t.ok(r.result.get('mode') == 'copy_video', 'transitions: mode copy_video', r.result.get('mode'))
    check_output_file(r, 'transitions', sum(durs), 48 + 24 + 36 + 24 + 24)
    res = r.result.get('segments', [])
    t.ok([s.get('label') for s in res] == [s[1] for s in segs],
         'transitions: five result segments with their labels', res)
    got = seg_starts(r)
    t.ok(len(got) == 5 and all(abs(x - y) < 0.002 for x, y in zip(got, starts)),
         'transitions: segment starts %s' % starts, 'got %r' % got)
    t.ok(len(res) == 5 and all(abs(s.get('duration', 0) - d) < 0.002 for s, d in zip(res, durs)),
         'transitions: segment durations %s' % durs, res)
    pcm = Pcm(r.output)
    for i in (1, 3):
        lv = rms_db(pcm.win(starts[i] + 0.05, starts[i] + durs[i] - 0.05))
        t.ok(lv < SILENT_DB, 'transitions: silence during %s' % segs[i][1], '%.1f dB' % lv)
    bad = []
    for i, freq in ((0, 330), (2, 440), (4, 550)):
        w = pcm.win(starts[i] + 0.1, starts[i] + durs[i] - 0.1)
        g_in = db(tone_amp(Pcm(fx(segs[i][0])).win(0.1, durs[i] - 0.1), freq))
        g_out = db(tone_amp(w, freq))
        if abs(g_in - g_out) > 1:
            bad.append('%s: %d Hz %.1f dB in, %.1f dB out' % (segs[i][1], freq, g_in, g_out))
    t.ok(not bad, 'transitions: every clip\'s tone in its own place at its level', *bad)


def frame(*args):
    return Run(['frame'] + list(args))


def case_frames():
    """7. Thumbnail and the frame command."""
    r = compile_('case7', [('sync1.mp4', 'One'), ('sync2.mp4', 'Two')])
    if not must_compile(r, 'thumbnail'):
        return
    v = stream(ffprobe_streams(r.output), 'video')
    size = (int(v['width']), int(v['height']))
    th = stream(ffprobe_streams(r.thumb), 'video') if os.path.exists(r.thumb) else None
    t.ok(th is not None and th['codec_name'] == 'mjpeg' and (int(th['width']), int(th['height'])) == size,
         'thumbnail: a JPEG the size of the video (%dx%d)' % size, 'ffprobe: %s' % th)
    if th is not None:
        p = run(['ffmpeg', '-v', 'error', '-i', r.thumb, '-f', 'null', '-'])
        t.ok(p.returncode == 0 and not p.stderr.strip(), 'thumbnail: decodes without errors',
             p.stderr.decode(errors='replace')[-300:])

    jpg = os.path.join(OUT, 'last.jpg')
    f = frame(r.output, '--last', jpg)
    fr = (f.last or {}).get('frame') or {}
    t.ok(f.rc == 0 and fr.get('file') == jpg and (fr.get('width'), fr.get('height')) == size,
         'frame --last: exit 0, file and size', f.why())
    t.near(fr.get('time'), 5.0 - FRAME, FRAME / 2, 'frame --last: the time of the last frame')
    if os.path.exists(jpg):
        st = stream(ffprobe_streams(jpg), 'video')
        t.ok(st['codec_name'] == 'mjpeg' and (int(st['width']), int(st['height'])) == size,
             'frame --last: the file is a JPEG of that size', st)
    for at, white in ((3.0, True), (2.75, False), (0.5, True)):
        jpg = os.path.join(OUT, 'at%s.jpg' % at)
        f = frame(r.output, '--at', str(at), jpg)
        fr = (f.last or {}).get('frame') or {}
        good = f.rc == 0 and os.path.exists(jpg)
        if t.ok(good, 'frame --at %s: exit 0 and a JPEG' % at, f.why()):
            t.near(fr.get('time'), at, FRAME / 2, 'frame --at %s: reports the time' % at)
            gw, gh, px = gray(jpg)
            y = mean_region(gw, gh, px, 0, 1, 0, 1)
            t.ok((y > 200) == white, 'frame --at %s: the %s frame' % (at, 'white flash' if white else 'plain'),
                 'mean luma %.0f' % y)
    jpg = os.path.join(OUT, 'src.jpg')
    f = frame(fx('sync3.mp4'), '--at', '0.5', jpg)
    if t.ok(f.rc == 0 and os.path.exists(jpg), 'frame --at 0.5 of a clip with moov at the end', f.why()):
        gw, gh, px = gray(jpg)
        t.ok(mean_region(gw, gh, px, 0, 1, 0, 1) > 200, 'frame --at 0.5 of the clip: its flash')
    for args, what in (([fx('missing.mp4'), '--last'], 'a missing file'),
                       ([fx('bad_text.mp4'), '--last'], 'a text file'),
                       ([fx('voice.m4a'), '--last'], 'a file without video'),
                       ([r.output, '--at', 'soon'], 'a bad --at')):
        jpg = os.path.join(OUT, 'fail.jpg')
        f = frame(*(args + [jpg]))
        t.ok(f.rc == 1 and f.error is not None and f.error.get('message') and not os.path.exists(jpg),
             'frame of %s: exit 1, an error line, no JPEG' % what, f.why())


def case_bad():
    """8. Damaged media and malformed manifests fail cleanly."""
    good1, good2 = ('tone1.mp4', 'Entry'), ('tone2.mp4', 'Garden')
    for name, what in (('bad_trunc.mp4', 'an MP4 cut at half'),
                       ('bad_trunc_fs.mp4', 'a faststart MP4 cut short'),
                       ('bad_text.mp4', 'a text file named .mp4'),
                       ('bad_empty.mp4', 'a zero-length file'),
                       ('bad_huge_mdat.mp4', 'an mdat claiming 4 GB'),
                       ('bad_huge_samples.mp4', 'samples claiming 2 GB each'),
                       ('missing.mp4', 'a missing file'),
                       ('voice.m4a', 'an audio-only file')):
        r = compile_('case8', [good1, (name, 'Bad kitchen'), good2])
        e = r.error or {}
        t.ok(r.rc == 1 and e.get('segment') == 2 and 'Bad kitchen' in (e.get('message') or ''),
             'bad media, %s: exit 1, error names segment 2 and its label' % what, r.why())
        t.ok(not os.path.exists(r.output) and not os.path.exists(r.thumb),
             'bad media, %s: no output or thumbnail left' % what)
    r = compile_('case8m', [good1, good2], music='bad_text.mp4')
    e = r.error or {}
    t.ok(r.rc == 1 and 'music' in (e.get('message') or '') and 'segment' not in e
         and not os.path.exists(r.output),
         'bad music: exit 1, the message names the music, no segment number, no output', r.why())

    out = os.path.join(OUT, 'case8.mp4')
    seg = {'file': fx('tone1.mp4'), 'kind': 'clip', 'label': 'A'}
    # Each bad manifest fails with a message naming the field (and the
    # value) that is wrong.
    for raw, words, what in (
            ('{"segments": [oops', ('JSON', 'line 1'), 'not JSON'),
            ('[1, 2]', ('object', '[1,2]'), 'an array, not an object'),
            (json.dumps({'output': out}), ('"segments"',), 'no segments'),
            (json.dumps({'segments': [], 'output': out}), ('"segments"', 'empty'), 'an empty segment list'),
            (json.dumps({'segments': {'file': 'a'}, 'output': out}), ('"segments"', 'array'),
             'segments that are an object'),
            (json.dumps({'segments': [dict(seg, file=12)], 'output': out}), ('"file"', 'segment 1', '12'),
             'a segment file that is a number'),
            (json.dumps({'segments': [seg, {'kind': 'clip'}], 'output': out}), ('"file"', 'segment 2'),
             'a segment without a file'),
            (json.dumps({'segments': [seg]}), ('"output"',), 'no output'),
            (json.dumps({'segments': [seg], 'output': ['a']}), ('"output"', '["a"]'), 'an output that is a list'),
            (json.dumps({'segments': [seg, dict(seg, crossfade='half')], 'output': out}),
             ('"crossfade"', '"half"'), 'a crossfade that is a string'),
            (json.dumps({'segments': [seg], 'output': out, 'video_volume': 2}), ('"video_volume"', '2'),
             'a video volume out of range'),
            (json.dumps({'segments': [seg], 'output': out, 'music': 'song.mp3'}), ('"music"', 'song.mp3'),
             'music that is a string'),
            (json.dumps({'segments': [dict(seg, kind='intro')], 'output': out}), ('"kind"', 'intro'),
             'an unknown segment kind'),
            (json.dumps({'segments': [seg], 'output': out, 'aspect_ratio': '4:3'}), ('"aspect_ratio"', '4:3'),
             'an unknown aspect ratio'),
            (json.dumps({'segments': [seg], 'output': out, 'mode': 'fast'}), ('"mode"', 'fast'),
             'an unknown mode')):
        r = compile_('case8', None, raw=raw)
        e = r.error or {}
        msg = (e.get('message') or '').lower()
        t.ok(r.rc == 1 and all(w.lower() in msg for w in words) and not os.path.exists(out),
             'manifest with %s: exit 1 and a message naming %s' % (what, ', '.join(words)), r.why())
    # Relative paths are relative to the directory the helper runs in (the
    # compile worker runs it in hagen.work_dir).
    rel = os.path.join(OUT, 'case8_rel')
    os.makedirs(rel, exist_ok=True)
    shutil.copy(fx('tone1.mp4'), os.path.join(rel, 'a.mp4'))
    with open(os.path.join(rel, 'manifest.json'), 'w') as f:
        json.dump({'segments': [{'file': 'a.mp4'}], 'output': 'out/final.mp4'}, f)
    os.makedirs(os.path.join(rel, 'out'), exist_ok=True)
    p = subprocess.run([HC, 'compile', 'manifest.json'], cwd=rel, capture_output=True, timeout=240)
    last = (p.stdout.decode(errors='replace').strip().splitlines() or ['{}'])[-1]
    t.ok(p.returncode == 0 and '"result"' in last and os.path.getsize(os.path.join(rel, 'out/final.mp4')) > 0,
         'relative paths in the manifest resolve against the working directory', last[-300:])
    r = Run(['compile', os.path.join(OUT, 'no-such-manifest.json')])
    t.ok(r.rc == 1 and r.error is not None, 'a missing manifest: exit 1 and an error line', r.why())


def case_crossfade():
    """10. Crossfades: frames blended, audio faded, shorter by each fade, sync kept."""
    # Black into white over 0.5 s (12 frames): luma ramps evenly between them.
    r = compile_('case10_bw', [('black.mp4', 'Black'), ('white.mp4', 'White', 'clip', 0.5)],
                 thumbnail=False)
    if must_compile(r, 'crossfade black to white'):
        t.ok(r.result.get('mode') == 'normalize', 'crossfade: re-encoded (mode normalize)',
             r.result.get('mode'))
        check_output_file(r, 'crossfade black to white', 1.5, 36, want_audio=False)
        res = r.result.get('segments', [])
        t.ok([round(s.get('start', -1), 3) for s in res] == [0, 0.5]
             and [round(s.get('crossfade', -1), 3) for s in res] == [0, 0.5]
             and [round(s.get('duration', -1), 3) for s in res] == [1, 1],
             'crossfade: result segments start at 0 and 0.5 s, fade 0.5 s, last 1 s each', res)
        ys = [y for _, y in video_frames(r.output)]
        ramp = ys[12:24]
        steps = [b - a for a, b in zip([ys[11]] + ramp, ramp + [ys[24]])] if len(ys) == 36 else []
        t.ok(len(ys) == 36 and max(ys[:12]) < 20 and min(ys[24:]) > 230
             and all(abs(s - (ys[24] - ys[11]) / 13) < 4 for s in steps),
             'crossfade: 12 black frames, 12 frames ramping evenly to white (13 equal steps), 12 white',
             'luma per frame: %s' % [round(y) for y in ys])

    # Tones into tones: each alone at its level outside the fades, both
    # inside, the outgoing one falling while the incoming one rises.
    segs = [('tone1.mp4', 'A'), ('tone2.mp4', 'B', 'clip', 0.5), ('tone3.mp4', 'C', 'clip', 2.0)]
    r = compile_('case10_tones', segs, thumbnail=False)
    if must_compile(r, 'crossfade tones'):
        # C lasts 1 s: its fade is cut to half of it, 0.5 s.
        check_output_file(r, 'crossfade tones', 2 + 1.5 + 1 - 1.0, 84)
        res = r.result.get('segments', [])
        t.ok([round(s.get('crossfade', -1), 3) for s in res] == [0, 0.5, 0.5]
             and [round(s.get('start', -1), 3) for s in res] == [0, 1.5, 2.5],
             'crossfade: a fade longer than half a segment is cut to half of it (2 s -> 0.5 s)', res)
        pcm = Pcm(r.output)
        bad = []
        for (f, freq, d), (a0, a1) in (((segs[0][0], 330, 2.0), (0.1, 1.4)),
                                       ((segs[1][0], 440, 1.5), (2.05, 2.45)),
                                       ((segs[2][0], 550, 1.0), (3.05, 3.45))):
            g_in = db(tone_amp(Pcm(fx(f)).win(0.1, 0.5), freq))
            g_out = db(tone_amp(pcm.win(a0, a1), freq))
            if abs(g_in - g_out) > 1:
                bad.append('%d Hz %.1f dB in, %.1f dB out at %.2f-%.2f s' % (freq, g_in, g_out, a0, a1))
        t.ok(not bad, 'crossfade: each tone alone at its level outside the fades', *bad)
        early, late = pcm.win(1.52, 1.66), pcm.win(1.84, 1.98)
        a_e, a_l = tone_amp(early, 330), tone_amp(late, 330)
        b_e, b_l = tone_amp(early, 440), tone_amp(late, 440)
        t.ok(a_e > 2 * a_l > 0 and b_l > 2 * b_e > 0,
             'crossfade: in the fade 330 Hz falls and 440 Hz rises, both audible',
             '330 Hz %.1f -> %.1f dB, 440 Hz %.1f -> %.1f dB' % (db(a_e), db(a_l), db(b_e), db(b_l)))

    # Flash and beep at 0.5 s of each 2.5 s clip, fades of 0.5 s: both
    # land at start + 0.5 s with starts 0, 2, 4, and stay together.
    segs = [('sync1.mp4', 'R1'), ('sync2.mp4', 'R2', 'clip', 0.5), ('sync3.mp4', 'R3', 'clip', 0.5)]
    r = compile_('case10_sync', segs, music='music_long.mp3', music_volume=0.05, thumbnail=False)
    if must_compile(r, 'crossfade sync'):
        check_output_file(r, 'crossfade sync', 6.5, 156)
        fl = flashes(r.output)
        on = Pcm(r.output).onsets(threshold=0.2)
        want = [0.5, 2.5, 4.5]
        t.ok(len(fl) == 3 and all(abs(f - w) <= FRAME / 2 for f, w in zip(fl, want)),
             'crossfade sync: flashes at 0.5, 2.5, 4.5 s', 'flashes at %s' % [round(x, 3) for x in fl])
        t.ok(len(on) == 3 and all(abs(o - w) < FRAME for o, w in zip(on, want)),
             'crossfade sync: beeps at 0.5, 2.5, 4.5 s (within a frame), music under them',
             'beep onsets at %s' % [round(x, 4) for x in on])

    # A crossfade into a transition's successor only: the others are cuts.
    segs = [('tone1.mp4', 'A'), ('trans1.mp4', 'to B', 'transition', 0), ('tone2.mp4', 'B', 'clip', 0.25)]
    r = compile_('case10_mixed', segs, thumbnail=False)
    if must_compile(r, 'crossfade after a transition'):
        check_output_file(r, 'crossfade after a transition', 2 + 1 + 1.5 - 0.25, 102)
        t.ok([round(s.get('crossfade', -1), 3) for s in r.result.get('segments', [])] == [0, 0, 0.25],
             'crossfade: only the segment that asks for it fades', r.result.get('segments'))

    # Bad crossfades in a manifest.
    for name, segs, want in (
            ('first', [('tone1.mp4', 'A', 'clip', 0.5), ('tone2.mp4', 'B')], 'nothing before it'),
            ('long', [('tone1.mp4', 'A'), ('tone2.mp4', 'B', 'clip', 2.5)], 'from 0 to 2'),
            ('text', [('tone1.mp4', 'A'), ('tone2.mp4', 'B', 'clip', 'slow')], 'from 0 to 2')):
        r = compile_('case10_bad_' + name, segs, thumbnail=False)
        e = r.error or {}
        t.ok(r.rc == 1 and want in str(e.get('message')) and e.get('segment') == (1 if name == 'first' else 2)
             and not os.path.exists(r.output),
             'crossfade %s: refused with "%s", naming the segment, no output' % (name, want), r.why())



def split_(name, segments, groups, music=None, music_volume=0.3, threads=1, thumbnail=True):
    """A compile split as SQL splits it: a plan, one chunk per group of
    segments (1-based (first, last)), then the join.  Returns (plan run,
    chunk runs, join run); a run that failed ends the list early."""
    plan = compile_(name + '_plan', segments, music=music, music_volume=music_volume, thumbnail=False,
                    extra={'task': 'plan', 'threads': threads})
    if plan.rc != 0 or plan.result is None:
        return plan, [], None
    ps = plan.result['segments']
    target = {'width': plan.result['width'], 'height': plan.result['height'], 'fps': plan.result['fps']}
    segs = seg_dicts(segments)
    chunks = []
    for k, (a, b) in enumerate(groups):
        listed = [dict(segs[i - 1], index=i, fade_frames=ps[i - 1]['fade_frames']) for i in range(a, b + 1)]
        if b < len(segs) and ps[b]['fade_frames'] > 0:
            listed.append(dict(segs[b], index=b + 1, fade_frames=ps[b]['fade_frames'], head=True))
        out = os.path.join(OUT, '%s_chunk%d.mp4' % (name, k + 1))
        r = compile_('%s_chunk%d' % (name, k + 1), None, raw=json.dumps(
            {'task': 'chunk', 'segments': listed, 'target': target, 'threads': threads, 'output': out}))
        chunks.append(r)
        if r.rc != 0 or r.result is None:
            return plan, chunks, None
    by_index = {x['index']: x for r in chunks for x in r.result['segments']}
    jsegs = [dict(sd, fade_frames=p['fade_frames'], frames=by_index[i + 1]['frames'],
                  held=by_index[i + 1]['held']) for i, (sd, p) in enumerate(zip(segs, ps))]
    out = os.path.join(OUT, name + '.mp4')
    m = {'task': 'join', 'segments': jsegs, 'target': target, 'threads': threads,
         'chunks': [{'file': r.output, 'first': a, 'last': b} for r, (a, b) in zip(chunks, groups)],
         'music': {'file': fx(music), 'volume': music_volume} if music else None,
         'video_volume': 1.0, 'aspect_ratio': '16:9', 'output': out}
    if thumbnail:
        m['thumbnail'] = os.path.join(OUT, name + '.jpg')
    join = compile_(name, None, raw=json.dumps(m))
    join.manifest_dict = m
    return plan, chunks, join


def same_as_single(name, joined, single):
    """The joined file against the single compile's: frames, timestamps,
    luma (the blended frames above all), audio bit for bit."""
    vj, vs = video_frames(joined.output), video_frames(single.output)
    blended = [k for x in single.result.get('segments', [])
               for k in range(round(x['start'] * 24), round((x['start'] + x['crossfade']) * 24))]
    t.ok(len(vj) == len(vs) and len(vj) > 0,
         '%s: as many frames as the single compile (%d)' % (name, len(vs)), 'joined %d' % len(vj))
    t.ok(len(vj) == len(vs) and all(abs(a[0] - b[0]) < 1e-6 for a, b in zip(vj, vs)),
         '%s: every frame at the single compile\'s timestamp' % name,
         'first differences: %s' % [(round(a[0], 4), round(b[0], 4)) for a, b in zip(vj, vs)
                                     if abs(a[0] - b[0]) >= 1e-6][:5])
    diff = [abs(a[1] - b[1]) for a, b in zip(vj, vs)]
    t.ok(diff and max(diff) < 2.5, '%s: every frame\'s mean luma within 2.5 of the single compile\'s '
         '(two encodes of the same frames)' % name, 'largest difference %.2f at frame %d'
         % (max(diff or [0]), diff.index(max(diff or [0]))))
    bl = [(k, round(vj[k][1], 1), round(vs[k][1], 1)) for k in blended if k < len(vj) and k < len(vs)]
    t.ok(len(bl) == len(blended) and all(abs(a - b) < 2.5 for _, a, b in bl),
         '%s: the %d blended frames match the single compile\'s (luma)' % (name, len(blended)),
         'frame, joined, single: %s' % bl[:12])
    if stream(ffprobe_streams(single.output), 'audio') is not None:
        t.ok(packet_hashes(joined.output, 'a') == packet_hashes(single.output, 'a'),
             '%s: audio packets bit for bit the single compile\'s (framemd5)' % name)
    rj, rs = joined.result.get('segments', []), single.result.get('segments', [])
    t.ok([(round(x['start'], 4), round(x['duration'], 4), round(x['crossfade'], 4)) for x in rj]
         == [(round(x['start'], 4), round(x['duration'], 4), round(x['crossfade'], 4)) for x in rs]
         and abs(joined.result.get('duration', 0) - single.result.get('duration', -1)) < 1e-6,
         '%s: result duration and segments (start, duration, fade) as the single compile\'s' % name,
         'joined %s' % rj, 'single %s' % rs)


def case_chunks():
    """11. A re-encode split: plan, chunks on their own, join = the single compile."""
    segs = [('sync%d.mp4' % i, 'Room %d' % i) + (('clip', 0.5) if i > 1 else ()) for i in range(1, 7)]
    music = ('music_long.mp3', 0.05)
    single = compile_('case11_single', segs, music=music[0], music_volume=music[1],
                      extra={'threads': 1})
    if not must_compile(single, 'chunks: the single compile'):
        return
    plan, chunks, join = split_('case11', segs, [(1, 2), (3, 4), (5, 6)], music=music[0],
                                music_volume=music[1])
    p = plan.result or {}
    t.ok(plan.rc == 0 and p.get('task') == 'plan' and p.get('mode') == 'normalize'
         and (p.get('width'), p.get('height'), p.get('fps')) == (320, 180, '24/1')
         and not os.path.exists(plan.output),
         'plan: exit 0, normalize to 320x180 at 24/1, no output written', plan.why(), p)
    t.ok([x.get('fade_frames') for x in p.get('segments', [])] == [0] + [12] * 5
         and [x.get('frames') for x in p.get('segments', [])] == [60] * 6
         and [x.get('index') for x in p.get('segments', [])] == list(range(1, 7))
         and abs(p.get('duration', 0) - 12.5) < 1e-6,
         'plan: 60 frames a segment, fades of 12 frames into segments 2-6, 12.5 s in all', p.get('segments'))
    want = [(108, [(1, 60, 12), (2, 60, 12)]), (96, [(3, 60, 12), (4, 60, 12)]),
            (96, [(5, 60, 12), (6, 60, 0)])]
    for k, (r, (frames, per_seg)) in enumerate(zip(chunks, want)):
        what = 'chunk %d (segments %d-%d)' % (k + 1, 2 * k + 1, 2 * k + 2)
        res = r.result or {}
        if not t.ok(r.rc == 0 and res.get('task') == 'chunk', what + ': exit 0 and a chunk result', r.why()):
            continue
        st = ffprobe_streams(r.output)
        v = stream(st, 'video')
        t.ok(res.get('frames') == frames and int(v['nb_read_packets']) == frames and stream(st, 'audio') is None,
             what + ': %d frames in the result and the file, video only' % frames,
             'result %s, ffprobe %s packets, streams %s' % (res.get('frames'), v['nb_read_packets'],
                                                           [x['codec_type'] for x in st]))
        t.ok([(x['index'], x['frames'], x['held']) for x in res.get('segments', [])] == per_seg,
             what + ': each segment\'s frames and frames held for the next fade', res.get('segments'))
        t.ok(isinstance(res.get('cpu_seconds'), float) and 0 < res['cpu_seconds'] < 60,
             what + ': the result says what CPU time it took', res.get('cpu_seconds'))
        segs_named = sorted({x['segment'] for x in r.lines if isinstance(x, dict) and 'segment' in x})
        t.ok(segs_named == list(range(2 * k + 1, min(2 * k + 3, 6) + 1)),
             what + ': its progress names its own segments (and the next one\'s head)', segs_named)
    if join is None or not must_compile(join, 'chunks joined'):
        return
    t.ok(join.result.get('mode') == 'normalize' and join.result.get('task') == 'join'
         and join.result.get('chunks') == 3, 'join: mode normalize, task join, 3 chunks', join.result)
    check_progress(join, 6, 'join')
    check_output_file(join, 'join', 12.5, 300)
    # Frames 48-59 blend segment 1 into 2 (chunk 1); 96-107 segment 2 into
    # 3 (the head at the end of chunk 1); 144-155 and 192-203 across chunk 2.
    same_as_single('join', join, single)
    fl = flashes(join.output)
    on = Pcm(join.output).onsets(threshold=0.2)
    want_t = [0.5 + 2 * i for i in range(6)]
    t.ok(len(fl) == 6 and all(abs(f - w) <= FRAME / 2 for f, w in zip(fl, want_t))
         and len(on) == 6 and all(abs(o - w) < FRAME for o, w in zip(on, want_t)),
         'join: a flash and a beep together at 0.5, 2.5, ... 10.5 s (sync across every chunk boundary)',
         'flashes %s' % [round(x, 3) for x in fl], 'beeps %s' % [round(x, 4) for x in on])

    # Mixed sources (30 fps, 9:16, 1:1, mono 44.1 kHz), a chunk of one segment.
    segs = [('mute1.mp4', 'Front'), ('n30.mp4', 'Porch', 'clip', 0.25), ('n916.mp4', 'Hall', 'clip', 0.25),
            ('n11.mp4', 'Bath'), ('nmono.mp4', 'Garden', 'clip', 0.25)]
    single = compile_('case11_mixed_single', segs, thumbnail=False, extra={'threads': 1})
    plan, chunks, join = split_('case11_mixed', segs, [(1, 2), (3, 3), (4, 5)], thumbnail=False)
    if must_compile(single, 'mixed, single') and join is not None and must_compile(join, 'mixed, joined'):
        same_as_single('mixed sources', join, single)
    else:
        t.ok(False, 'mixed sources: plan and chunks ran', plan.why(), *[r.why() for r in chunks])

    # Boundaries with and without a fade: a transition (no fade into it)
    # starts chunk 2; chunk 3 starts with a fade (the head of chunk 2).
    segs = [('tone1.mp4', 'A'), ('trans1.mp4', 'to B', 'transition'), ('tone2.mp4', 'B', 'clip', 0.25),
            ('tone3.mp4', 'C', 'clip', 0.25)]
    single = compile_('case11_cuts_single', segs, thumbnail=False, extra={'threads': 1})
    plan, chunks, join = split_('case11_cuts', segs, [(1, 1), (2, 3), (4, 4)], thumbnail=False)
    if must_compile(single, 'cuts, single') and join is not None and must_compile(join, 'cuts, joined'):
        t.ok(len(chunks) == 3 and [x.get('head') for x in json.load(open(chunks[0].manifest))['segments']]
             == [None] and json.load(open(chunks[1].manifest))['segments'][-1].get('head') is True,
             'cuts: no head after a cut, a head before a fade')
        same_as_single('cuts', join, single)
    cuts_join, cuts_chunks = join, chunks

    # Black and white by turns, every frame from 12 to 47 a blend, a chunk
    # boundary inside each ramp's neighbourhood: the ramps are the single
    # compile's, step for step.
    segs = [('black.mp4', 'B1'), ('white.mp4', 'W1', 'clip', 0.5), ('black.mp4', 'B2', 'clip', 0.5),
            ('white.mp4', 'W2', 'clip', 0.5)]
    single = compile_('case11_bw_single', segs, thumbnail=False, extra={'threads': 1})
    plan, chunks, join = split_('case11_bw', segs, [(1, 1), (2, 2), (3, 4)], thumbnail=False)
    if must_compile(single, 'black and white, single') and join is not None \
            and must_compile(join, 'black and white, joined'):
        check_output_file(join, 'black and white, joined', 2.5, 60, want_audio=False)
        same_as_single('black and white', join, single)
        ys = [round(y) for _, y in video_frames(join.output)]
        up1, down, up2 = ys[12:24], ys[24:36], ys[36:48]
        t.ok(len(ys) == 60 and max(ys[:12]) < 20 and min(ys[48:]) > 230
             and all(b > a for a, b in zip(up1, up1[1:])) and all(b < a for a, b in zip(down, down[1:]))
             and all(b > a for a, b in zip(up2, up2[1:])),
             'black and white: 12 black, ramps up, down and up across the chunks, 12 white',
             'luma per frame: %s' % ys)

    # Joins that must fail: chunks of another split, a count that is off,
    # a chunk of another size.
    join, chunks = cuts_join, cuts_chunks
    m = dict(join.manifest_dict) if join is not None else None
    if m:
        def join_fails(name, manifest, words, what):
            r = compile_(name, None, raw=json.dumps(manifest))
            e = r.error or {}
            t.ok(r.rc == 1 and all(w in (e.get('message') or '') for w in words)
                 and not os.path.exists(r.output), what + ': exit 1 naming ' + ', '.join(words) + ', no output',
                 r.why())
        other = dict(m, output=os.path.join(OUT, 'case11_bad.mp4'), thumbnail=None)
        swapped = dict(other, chunks=[dict(c, file=chunks[2 - i].output) for i, c in enumerate(m['chunks'])])
        join_fails('case11_bad', swapped, ['chunk 1', 'segments 1 to 1', 'does not belong'],
                   'a join given another chunk\'s file')
        off = dict(other, segments=[dict(x, frames=x['frames'] + (1 if i == 1 else 0))
                                    for i, x in enumerate(m['segments'])])
        join_fails('case11_bad', off, ['chunk 2', 'frames where its segments give'],
                   'a join whose frame counts are off by one')
        big = compile_('case11_big', None, raw=json.dumps(
            {'task': 'chunk', 'segments': [dict(seg_dicts(segs)[1], index=2, fade_frames=0)],
             'target': {'width': 640, 'height': 360, 'fps': '24/1'}, 'output': os.path.join(OUT, 'case11_big.mp4')}))
        mixed = dict(other, chunks=[dict(c, file=big.output) if i == 1 else c for i, c in enumerate(m['chunks'])])
        join_fails('case11_bad', mixed, ['chunk 2', 'not encoded like chunk 1'], 'a join with a chunk of another size')

    # A chunk manifest that cannot be: each refused, naming what is wrong.
    seg = dict(seg_dicts([('tone1.mp4', 'A')])[0], index=2, fade_frames=0)
    out = os.path.join(OUT, 'case11_m.mp4')
    tgt = {'width': 320, 'height': 180, 'fps': '24/1'}
    for man, words, what in (
            ({'task': 'render', 'segments': [seg], 'output': out}, ['"task"', 'render'], 'an unknown task'),
            ({'task': 'chunk', 'segments': [seg], 'output': out}, ['"target"'], 'a chunk without a target'),
            ({'task': 'chunk', 'segments': [seg], 'output': out, 'target': dict(tgt, fps='24')},
             ['"fps"', '24'], 'a frame rate that is not N/D'),
            ({'task': 'chunk', 'segments': [seg], 'output': out, 'target': dict(tgt, width=321)},
             ['even'], 'an odd width'),
            ({'task': 'chunk', 'segments': [dict(seg, head=True), dict(seg, index=3)], 'output': out,
              'target': tgt}, ['"head"', 'last'], 'a head that is not last'),
            ({'task': 'chunk', 'segments': [seg, dict(seg, index=4)], 'output': out, 'target': tgt},
             ['follow', 'segment 4', 'segment 2'], 'segments that do not follow each other'),
            ({'task': 'chunk', 'segments': [dict(seg, fade_frames=None)], 'output': out, 'target': tgt},
             ['"fade_frames"', 'segment 2'], 'a segment without fade_frames'),
            ({'task': 'chunk', 'segments': [seg], 'output': out, 'target': tgt, 'threads': -1},
             ['"threads"', '-1'], 'threads below 0'),
            ({'task': 'join', 'segments': [dict(seg, index=None, frames=48, held=0)] * 2, 'output': out,
              'target': tgt, 'chunks': [{'file': out, 'first': 2, 'last': 2}]},
             ['chunk 1', 'segments 2 to 2', 'must begin at segment 1'], 'chunks that do not cover the segments'),
            ({'task': 'join', 'segments': [dict(seg, index=None, frames=48, held=60)], 'output': out,
              'target': tgt, 'chunks': [{'file': out, 'first': 1, 'last': 1}]},
             ['"held"', '60'], 'more frames held than the segment has')):
        r = compile_('case11_m', None, raw=json.dumps(man))
        e = r.error or {}
        t.ok(r.rc == 1 and all(w in (e.get('message') or '') for w in words) and not os.path.exists(out),
             'chunk manifest with %s: exit 1 and a message naming %s' % (what, ', '.join(words)), r.why())
    # Fades longer than a chunk's segment can give at a split (hand-made:
    # the plan never asks for them).
    r = compile_('case11_short', None, raw=json.dumps(
        {'task': 'chunk', 'target': tgt, 'output': out,
         'segments': [dict(seg_dicts([('tone3.mp4', 'Short')])[0], index=2, fade_frames=20),
                      dict(seg_dicts([('tone2.mp4', 'Next')])[0], index=3, fade_frames=20, head=True)]}))
    e = r.error or {}
    t.ok(r.rc == 1 and e.get('segment') == 2 and 'too few for its crossfades' in (e.get('message') or ''),
         'a chunk whose segment is too short for its fades at a split: exit 1 naming segment 2', r.why())
    # Damaged media in a chunk: the error names the segment by its number
    # in the whole video.
    r = compile_('case11_dmg', None, raw=json.dumps(
        {'task': 'chunk', 'target': tgt, 'output': out,
         'segments': [dict(seg_dicts([('tone1.mp4', 'Fine')])[0], index=4, fade_frames=0),
                      dict(seg_dicts([('bad_trunc.mp4', 'Broken')])[0], index=5, fade_frames=0)]}))
    e = r.error or {}
    t.ok(r.rc == 1 and e.get('segment') == 5 and 'Broken' in (e.get('message') or '') and not os.path.exists(out),
         'bad media in a chunk: exit 1, the error names segment 5 (its number in the video) and its label',
         r.why())

CASES = {'1': case_copy_video, '2': case_sync, '3': case_copy, '4': case_music, '5': case_normalize,
         '6': case_transitions, '7': case_frames, '8': case_bad, '9': case_probe,
         '10': case_crossfade, '11': case_chunks}


def main():
    global t, FX, HC, OUT
    args = sys.argv[1:]
    first = 1
    if args[:1] == ['--first']:
        first, args = int(args[1]), args[2:]
    FX, HC = args[0], args[1]
    OUT = os.path.join(FX, 'out')
    os.makedirs(OUT, exist_ok=True)
    t = Tap(first)
    for key in args[2:] or ['9', '1', '2', '3', '4', '5', '6', '7', '8', '10', '11']:
        fn = CASES[key]
        print('# case %s: %s' % (key, fn.__doc__.strip().splitlines()[0]))
        try:
            fn()
        except Exception as e:  # a crash of a case is a failure, never a skip
            t.ok(False, 'case %s ran to its end' % key, '%s: %s' % (type(e).__name__, e),
                 traceback.format_exc())
    print('# %d tests, %d failed' % (t.n - first + 1, t.failed))
    sys.exit(1 if t.failed else 0)


if __name__ == '__main__':
    main()
