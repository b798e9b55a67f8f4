#!/usr/bin/env python3
"""The demo's two pictures, from what the database recorded about a project.

    demo_pictures.py --dsn DSN --project UUID --video final.mp4 --out DIR
                     [--statuses provider_status.json]

DIR/contact_sheet.png: one frame from the middle of every segment of the
final video (each clip, each transition), labelled with its room and the time
it shows in the video.

DIR/timeline.png: where the run's time went, one bar per clip and transition
job and one per compile job, each cut into its steps.  The steps come from the
job log's "step X done; next: Y" lines between the job's creation and its end,
so a new step shows up by itself; a job's wait for the provider is split into
queue and generation with the provider status changes demo_watch.py --record
saw in the job table.

DIR/pictures.json: what the pictures show (segments with times, bars with
their parts), which test/demo_check.py reads back.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

import psycopg2
from PIL import Image, ImageDraw, ImageFont

FONT = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf'
BOLD = '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf'

# Contact sheet geometry.
TILE_W, TILE_H, LABEL_H, GAP, COLS = 480, 270, 46, 12, 3
# Timeline geometry.
TL_W, NAME_W, ROW_H, TOP, BOTTOM = 1400, 300, 30, 64, 92

# The phases a bar is drawn in, and their colours.
PHASES = [
    ('upload', (94, 129, 172)),        # the photos to the provider's storage
    ('queue', (200, 200, 200)),        # submitted, waiting in the provider's queue
    ('generation', (235, 160, 60)),    # the provider generating
    ('download', (120, 180, 120)),     # media fetched (the clip; the compile's inputs)
    ('compile', (170, 110, 190)),      # hagen-compile
    ('store', (70, 150, 160)),         # uploads to the bucket
]
OTHER = ('other', (150, 150, 150))


def font(size, bold=False):
    try:
        return ImageFont.truetype(BOLD if bold else FONT, size)
    except OSError:
        return ImageFont.load_default()


def phase_of(step):
    """The phase of a step, by the words of its name (unknown steps: other)."""
    s = step.lower()
    if 'image' in s:
        return 'upload'
    if s in ('submit', 'in_queue'):
        return 'queue'
    if s in ('poll', 'result', 'in_progress', 'pending'):
        return 'generation'
    if 'download' in s or 'fetch' in s:
        return 'download'
    if 'compile' in s or 'encode' in s:
        return 'compile'
    if any(w in s for w in ('store', 'upload', 'part', 'cleanup')):
        return 'store'
    return OTHER[0]


def clock(seconds):
    return '%d:%04.1f' % (int(seconds // 60), seconds % 60)


def query(cur, sql, *args):
    cur.execute(sql, args)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


# ------------------------------------------------------------ contact sheet

def segments(cur, project, video_duration):
    """The segments of the final video in order: clips and the transitions
    after them, with their start and length (from the compile's result when it
    reports them, else from the clips' lengths)."""
    clips = query(cur, """
        SELECT id, sequence_order, coalesce(room_label, room_type, 'clip ' || sequence_order) AS label,
               duration, status, transition_status, transition_clip_url
        FROM hagen.video_clip WHERE project_id = %s ORDER BY sequence_order""", project)
    done = [c for c in clips if c['status'] == 'completed']
    segs = []
    for i, c in enumerate(done):
        segs.append({'kind': 'clip', 'label': c['label'], 'duration': float(c['duration'] or 5)})
        if c['transition_status'] == 'completed' and i + 1 < len(done):
            segs.append({'kind': 'transition', 'label': '%s → %s' % (c['label'], done[i + 1]['label']), 'duration': 5.0})
    reported = query(cur, """
        SELECT s AS seg FROM hagen.job j, jsonb_path_query(j.state, 'strict $.**.segments[*]') s
        WHERE j.project_id = %s AND j.kind = 'compile' AND j.status = 'succeeded'
        ORDER BY j.id DESC""", project)
    reported = [r['seg'] for r in reported][:len(segs)]
    if len(reported) == len(segs) and all('start' in r for r in reported):
        for s, r in zip(segs, reported):
            s['start'], s['duration'] = float(r['start']), float(r.get('duration', s['duration']))
    else:
        t = 0.0
        for s in segs:
            s['start'] = t
            t += s['duration']
        scale = video_duration / t if t else 1
        for s in segs:
            s['start'] *= scale
            s['duration'] *= scale
    for s in segs:
        s['at'] = round(s['start'] + s['duration'] / 2, 2)
    return segs


def frame_at(video, at, out):
    subprocess.run(['ffmpeg', '-nostdin', '-v', 'error', '-y', '-ss', '%.3f' % at, '-i', video,
                    '-frames:v', '1', out], check=True)
    return Image.open(out).convert('RGB')


def contact_sheet(segs, video, path):
    rows = (len(segs) + COLS - 1) // COLS
    w = COLS * TILE_W + (COLS + 1) * GAP
    h = rows * (TILE_H + LABEL_H) + (rows + 1) * GAP
    sheet = Image.new('RGB', (w, h), (24, 24, 28))
    d = ImageDraw.Draw(sheet)
    f1, f2 = font(19, True), font(16)
    with tempfile.TemporaryDirectory() as tmp:
        for i, s in enumerate(segs):
            x = GAP + (i % COLS) * (TILE_W + GAP)
            y = GAP + (i // COLS) * (TILE_H + LABEL_H + GAP)
            img = frame_at(video, s['at'], os.path.join(tmp, '%d.png' % i))
            img.thumbnail((TILE_W, TILE_H))
            sheet.paste(img, (x + (TILE_W - img.width) // 2, y + (TILE_H - img.height) // 2))
            d.rectangle((x, y + TILE_H, x + TILE_W - 1, y + TILE_H + LABEL_H - 1), fill=(40, 40, 46))
            d.text((x + 10, y + TILE_H + 12), s['label'], font=f1, fill=(240, 240, 240))
            stamp = '%s  (%s)' % (clock(s['at']), 'transition' if s['kind'] == 'transition' else 'clip')
            d.text((x + TILE_W - 10, y + TILE_H + 15), stamp, font=f2, fill=(190, 190, 200), anchor='ra')
    sheet.save(path)
    return [w, h]


# ------------------------------------------------------------ timeline

def bars(cur, project, statuses):
    """One bar per clip, transition and compile job: [{label, kind, parts:
    [{phase, step, start, end}]}], times in seconds from the first job."""
    jobs = query(cur, """
        SELECT j.id, j.kind, j.created_at, j.started_at, j.finished_at, j.status,
               coalesce(c.room_label, c.room_type, 'clip ' || c.sequence_order) AS label, c.sequence_order,
               (SELECT coalesce(n.room_label, n.room_type) FROM hagen.video_clip n
                WHERE n.project_id = c.project_id AND n.sequence_order > c.sequence_order
                ORDER BY n.sequence_order LIMIT 1) AS next_label
        FROM hagen.job j LEFT JOIN hagen.video_clip c ON c.id = j.clip_id
        WHERE j.project_id = %s AND j.kind IN ('clip', 'transition', 'compile')
        ORDER BY j.kind = 'compile', c.sequence_order, j.kind, j.id""", project)
    if not jobs:
        return [], 0.0
    t0 = min(j['created_at'] for j in jobs)
    sec = lambda t: (t - t0).total_seconds()
    logs = query(cur, """
        SELECT job_id, logged_at, message FROM hagen.job_log
        WHERE project_id = %s AND message LIKE 'step %% done; next: %%' ORDER BY id""", project)
    changes = {}
    for s in statuses:
        changes.setdefault(s['job_id'], []).append((datetime.datetime.fromisoformat(s['at']), s['provider_status']))
    out = []
    for j in jobs:
        first = j['started_at'] or j['created_at']
        end = j['finished_at'] or max([l['logged_at'] for l in logs if l['job_id'] == j['id']] + [first])
        # the job's steps: [(step, start)], from its log lines
        steps = []
        for l in logs:
            if l['job_id'] != j['id']:
                continue
            done, nxt = l['message'][len('step '):].split(' done; next: ', 1)
            if not steps:
                steps.append((done, first))
            steps.append((nxt, l['logged_at']))
        if not steps:
            steps = [(j['kind'], first)]
        parts = []
        for i, (step, start) in enumerate(steps):
            stop = steps[i + 1][1] if i + 1 < len(steps) else end
            # a wait for the provider: queue, then generation
            pieces = [(start, step)]
            if step == 'poll':
                for at, st in changes.get(j['id'], []):
                    if start < at < stop:
                        pieces.append((at, st))
                if changes.get(j['id']) and changes[j['id']][0][1] == 'IN_QUEUE':
                    pieces[0] = (start, 'IN_QUEUE')
            for k, (a, name) in enumerate(pieces):
                b = pieces[k + 1][0] if k + 1 < len(pieces) else stop
                if b > a:
                    phase = ('queue' if name == 'IN_QUEUE' else 'generation') if step == 'poll' else phase_of(step)
                    parts.append({'phase': phase, 'step': name, 'start': round(sec(a), 3), 'end': round(sec(b), 3)})
        label = j['label'] if j['kind'] == 'clip' else \
            ('%s → %s' % (j['label'], j['next_label']) if j['kind'] == 'transition' else 'compile + upload')
        out.append({'job_id': j['id'], 'kind': j['kind'], 'label': label, 'status': j['status'], 'parts': parts})
    total = max([p['end'] for b in out for p in b['parts']] + [0.0])
    return out, total


def timeline(rows, total, path, title):
    h = TOP + len(rows) * ROW_H + BOTTOM
    img = Image.new('RGB', (TL_W, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    f, fb, fs = font(15), font(20, True), font(13)
    d.text((16, 16), title, font=fb, fill=(30, 30, 30))
    x0, x1 = NAME_W, TL_W - 24
    scale = (x1 - x0) / max(total, 1e-3)
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if total / s <= 12)
    t = 0
    while t <= total + 1e-6:
        x = x0 + t * scale
        d.line([(x, TOP - 6), (x, TOP + len(rows) * ROW_H)], fill=(225, 225, 225))
        d.text((x, TOP + len(rows) * ROW_H + 6), '%g s' % t, font=fs, fill=(90, 90, 90), anchor='ma')
        t += step
    colors = dict(PHASES)
    colors[OTHER[0]] = OTHER[1]
    for i, r in enumerate(rows):
        y = TOP + i * ROW_H
        d.text((16, y + 7), r['label'], font=f, fill=(30, 30, 30))
        for p in r['parts']:
            a, b = x0 + p['start'] * scale, max(x0 + p['end'] * scale, x0 + p['start'] * scale + 1)
            d.rectangle((a, y + 5, b, y + ROW_H - 5), fill=colors.get(p['phase'], OTHER[1]))
    lx, ly = 16, h - 36
    for name, color in PHASES:
        d.rectangle((lx, ly, lx + 18, ly + 18), fill=color)
        d.text((lx + 24, ly + 1), name, font=f, fill=(40, 40, 40))
        lx += 40 + int(d.textlength(name, font=f)) + 20
    img.save(path)
    return [TL_W, h]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dsn', required=True)
    ap.add_argument('--project', required=True)
    ap.add_argument('--video', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--statuses')
    args = ap.parse_args()
    statuses = json.load(open(args.statuses)) if args.statuses and os.path.exists(args.statuses) else []
    cur = psycopg2.connect(args.dsn).cursor()
    probe = json.loads(subprocess.run(['ffprobe', '-v', 'error', '-show_entries', 'format=duration', '-of', 'json', args.video],
                                      check=True, capture_output=True, text=True).stdout)
    duration = float(probe['format']['duration'])
    segs = segments(cur, args.project, duration)
    sheet = contact_sheet(segs, args.video, os.path.join(args.out, 'contact_sheet.png'))
    rows, total = bars(cur, args.project, statuses)
    n_clips = sum(1 for r in rows if r['kind'] == 'clip')
    n_trans = sum(1 for r in rows if r['kind'] == 'transition')
    title = 'A run of %d clips and %d transition%s, then the compile: %.1f s from start_video to the stored video' % (
        n_clips, n_trans, '' if n_trans == 1 else 's', total)
    tl = timeline(rows, total, os.path.join(args.out, 'timeline.png'), title)
    json.dump({'video_duration': duration, 'segments': segs, 'contact_sheet_size': sheet,
               'timeline_size': tl, 'total_s': total, 'bars': rows}, open(os.path.join(args.out, 'pictures.json'), 'w'), indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
