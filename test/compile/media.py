"""Independent measurements of media files for test/compile and
bench/compile: everything here goes through the ffmpeg/ffprobe CLI or reads
the bytes itself, never through hagen-compile.  Plain Python (no numpy)."""

import array
import json
import math
import os
import struct
import subprocess

RATE = 48000


def run(cmd, timeout=300, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)


def ffprobe_streams(path):
    """The streams of a file as ffprobe sees them, packets counted."""
    p = run(['ffprobe', '-v', 'error', '-count_packets', '-show_entries',
             'stream=index,codec_type,codec_name,profile,width,height,r_frame_rate,'
             'avg_frame_rate,pix_fmt,sample_rate,channels,start_time,duration,time_base,'
             'nb_frames,nb_read_packets', '-of', 'json', path])
    if p.returncode != 0:
        raise RuntimeError('ffprobe %s: %s' % (path, p.stderr.decode(errors='replace')[-300:]))
    return json.loads(p.stdout)['streams']


def stream(streams, kind):
    for s in streams:
        if s.get('codec_type') == kind:
            return s
    return None


def stream_start(s):
    try:
        return float(s.get('start_time', 0))
    except ValueError:
        return 0.0


def stream_end(s):
    return stream_start(s) + float(s['duration'])


def top_atoms(path):
    """The kinds of the top-level MP4 boxes, in file order."""
    kinds = []
    size_total = os.path.getsize(path)
    with open(path, 'rb') as f:
        pos = 0
        while pos + 8 <= size_total and len(kinds) < 1000:
            f.seek(pos)
            size, kind = struct.unpack('>I4s', f.read(8))
            if size == 1:
                size = struct.unpack('>Q', f.read(8))[0]
            elif size == 0:
                size = size_total - pos
            kinds.append(kind.decode('latin-1'))
            if size < 8:
                break
            pos += size
    return kinds


def moov_first(path):
    k = top_atoms(path)
    return 'moov' in k and 'mdat' in k and k.index('moov') < k.index('mdat')


class Pcm:
    """A file's first audio stream decoded by the ffmpeg CLI to 48 kHz
    stereo s16, placed on the file's timeline (start = the stream's
    start_time), samples back to back as a player renders them."""

    def __init__(self, path, start=None):
        if start is None:
            a = stream(ffprobe_streams(path), 'audio')
            start = stream_start(a) if a else 0.0
        self.start = start
        p = run(['ffmpeg', '-nostdin', '-v', 'error', '-i', path, '-map', '0:a:0',
                 '-f', 's16le', '-acodec', 'pcm_s16le', '-ac', '2', '-ar', str(RATE), '-'])
        if p.returncode != 0:
            raise RuntimeError('decoding the audio of %s: %s'
                               % (path, p.stderr.decode(errors='replace')[-300:]))
        a = array.array('h')
        a.frombytes(p.stdout)
        self.left = a[0::2]
        self.right = a[1::2]
        self.n = len(self.left)
        self.end = self.start + self.n / RATE

    def win(self, t0, t1, ch=0):
        src = self.left if ch == 0 else self.right
        i0 = max(0, int(round((t0 - self.start) * RATE)))
        i1 = max(i0, min(self.n, int(round((t1 - self.start) * RATE))))
        return src[i0:i1]

    def onsets(self, threshold=0.1, quiet=0.2):
        """Times where the level first exceeds threshold (of full scale)
        after at least `quiet` seconds below it."""
        th = threshold * 32768
        gap = int(quiet * RATE)
        last = -gap - 1
        out = []
        for i, x in enumerate(self.left):
            if x > th or -x > th:
                if i - last > gap:
                    out.append(self.start + i / RATE)
                last = i
        return out


def rms_db(samples):
    if not samples:
        return -200.0
    s = sum(x * x for x in samples) / len(samples)
    return 20 * math.log10(math.sqrt(s) / 32768) if s > 0 else -200.0


def tone_amp(samples, freq, rate=RATE):
    """Amplitude (fraction of full scale) of a sine at freq, by a Goertzel
    filter over a Hann-windowed block."""
    n = len(samples)
    if n < 16:
        return 0.0
    w = 2 * math.pi * freq / rate
    c = 2 * math.cos(w)
    s1 = s2 = 0.0
    k = 2 * math.pi / (n - 1)
    for i, x in enumerate(samples):
        s0 = x * (0.5 - 0.5 * math.cos(k * i)) + c * s1 - s2
        s2, s1 = s1, s0
    power = s1 * s1 + s2 * s2 - c * s1 * s2
    # The Hann window halves the coherent gain.
    return 2 * math.sqrt(max(power, 0.0)) / (n * 0.5) / 32768


def db(x):
    return 20 * math.log10(x) if x > 0 else -200.0


def dominant_freq(samples, lo, hi, rate=RATE):
    """The frequency of the strongest sine between lo and hi Hz (1 Hz)."""
    best = max(range(lo, hi + 1, 5), key=lambda f: tone_amp(samples, f, rate))
    return max(range(best - 5, best + 6), key=lambda f: tone_amp(samples, f, rate))


def video_frames(path, expr='signalstats', key='lavfi.signalstats.YAVG'):
    """(pts_time, value) for every video frame, on the file's own timeline."""
    p = run(['ffmpeg', '-nostdin', '-v', 'error', '-copyts', '-i', path, '-map', '0:v:0',
             '-vf', '%s,metadata=print:key=%s:file=-' % (expr, key), '-f', 'null', '-'])
    if p.returncode != 0:
        raise RuntimeError('signalstats of %s: %s' % (path, p.stderr.decode(errors='replace')[-300:]))
    out, t = [], None
    for line in p.stdout.decode().splitlines():
        if line.startswith('frame:'):
            t = float(line.split('pts_time:')[1].split()[0])
        elif line.startswith(key + '=') and t is not None:
            out.append((t, float(line.split('=', 1)[1])))
    return out


def flashes(path, threshold=200):
    """Start times of runs of white frames (mean luma above threshold)."""
    out, prev = [], False
    for t, y in video_frames(path):
        white = y > threshold
        if white and not prev:
            out.append(t)
        prev = white
    return out


def gray(path, at=None):
    """One frame as (width, height, bytes of 8-bit luma)."""
    v = stream(ffprobe_streams(path), 'video')
    cmd = ['ffmpeg', '-nostdin', '-v', 'error']
    if at is not None:
        cmd += ['-ss', '%.3f' % at]
    p = run(cmd + ['-i', path, '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'gray', '-'])
    w, h = int(v['width']), int(v['height'])
    if p.returncode != 0 or len(p.stdout) < w * h:
        raise RuntimeError('a frame of %s: %s' % (path, p.stderr.decode(errors='replace')[-300:]))
    return w, h, p.stdout[:w * h]


def mean_region(w, h, data, x0, x1, y0, y1):
    """Mean luma of the region [x0,x1) x [y0,y1) given as fractions."""
    xs = range(int(x0 * w), max(int(x0 * w) + 1, int(x1 * w)))
    ys = range(int(y0 * h), max(int(y0 * h) + 1, int(y1 * h)))
    total = sum(data[y * w + x] for y in ys for x in xs)
    return total / (len(xs) * len(ys))


def packet_hashes(path, sel='v'):
    """(size, md5) of every packet of the first video (or audio) stream, as
    the ffmpeg CLI stream-copies it."""
    p = run(['ffmpeg', '-nostdin', '-v', 'error', '-i', path, '-map', '0:%s:0' % sel,
             '-c', 'copy', '-f', 'framemd5', '-'])
    if p.returncode != 0:
        raise RuntimeError('framemd5 of %s: %s' % (path, p.stderr.decode(errors='replace')[-300:]))
    out = []
    for line in p.stdout.decode().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        f = [x.strip() for x in line.split(',')]
        out.append((int(f[4]), f[5]))
    return out
