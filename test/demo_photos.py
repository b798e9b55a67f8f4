#!/usr/bin/env python3
"""Draws the demo's property photos: rooms in one-point perspective.

Used by test/demo.sh (no downloads: everything is drawn with Pillow).  Each
room type has its own floor, walls, window and furniture, so the clips the
simulator animates from them are told apart at a glance and by the demo's
check (a frame of each clip resembles its own photo more than the others).

    demo_photos.py OUTDIR ROOM[:NAME] ...     -> OUTDIR/NAME.jpg (1920x1080)

Rooms: exterior, living_room, kitchen, bedroom (also primary_bedroom),
bathroom, dining_room, office, backyard.  The same arguments always draw the
same pixels.
"""
import os
import random
import sys

from PIL import Image, ImageDraw, ImageFilter

W, H = 1920, 1080


def mix(a, b, t):
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def shade(c, f):
    return tuple(max(0, min(255, int(x * f))) for x in c)


def gradient(img, box, top, bottom):
    """A vertical gradient filling box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    d = ImageDraw.Draw(img)
    for y in range(y0, y1):
        d.line([(x0, y), (x1, y)], fill=mix(top, bottom, (y - y0) / max(1, y1 - y0 - 1)))


class Room:
    """A box room seen from its open side: back wall, floor, ceiling, side walls."""

    def __init__(self, rng, vp=(W * 0.5, H * 0.46), back=(0.30, 0.24, 0.70, 0.64)):
        self.rng = rng
        self.img = Image.new('RGB', (W, H))
        self.d = ImageDraw.Draw(self.img)
        self.vp = vp
        self.bx0, self.by0, self.bx1, self.by1 = back[0] * W, back[1] * H, back[2] * W, back[3] * H

    def toward(self, p, k):
        """The point k of the way from p to the vanishing point."""
        return (p[0] + (self.vp[0] - p[0]) * k, p[1] + (self.vp[1] - p[1]) * k)

    def shell(self, wall, floor, ceiling, planks=None, tiles=None):
        d = self.d
        b = (self.bx0, self.by0, self.bx1, self.by1)
        d.polygon([(0, 0), (W, 0), (b[2], b[1]), (b[0], b[1])], fill=ceiling)
        d.polygon([(0, 0), (b[0], b[1]), (b[0], b[3]), (0, H)], fill=shade(wall, 0.86))
        d.polygon([(W, 0), (b[2], b[1]), (b[2], b[3]), (W, H)], fill=shade(wall, 0.93))
        d.rectangle(b, fill=wall)
        d.polygon([(0, H), (W, H), (b[2], b[3]), (b[0], b[3])], fill=floor)
        if planks:
            # Floor boards converging on the vanishing point.
            for i in range(-12, 13):
                x = W / 2 + i * W / 14
                bx = b[0] + (b[2] - b[0]) * (i + 12) / 24
                d.line([(x, H), (bx, b[3])], fill=shade(floor, 0.82), width=3)
        if tiles:
            for i in range(-10, 11):
                d.line([(W / 2 + i * W / 9, H), (b[0] + (b[2] - b[0]) * (i + 10) / 20, b[3])], fill=tiles, width=2)
            y, step = b[3], 14
            while y < H:
                t = (y - b[3]) / (H - b[3])
                x0, x1 = b[0] * (1 - t), b[2] + (W - b[2]) * t
                d.line([(x0, y), (x1, y)], fill=tiles, width=2)
                step *= 1.35
                y += step
        # skirting on the back wall, and the room's edges
        d.rectangle((b[0], b[3] - 10, b[2], b[3]), fill=shade(wall, 0.75))
        for p in [(0, 0), (W, 0), (0, H), (W, H)]:
            d.line([p, (b[0] if p[0] == 0 else b[2], b[1] if p[1] == 0 else b[3])], fill=shade(wall, 0.7), width=2)

    def window(self, x0, y0, x1, y1, sky=((120, 170, 230), (205, 228, 250)), hills=True):
        x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
        w, h = x1 - x0, y1 - y0
        view = Image.new('RGB', (w, h))
        gradient(view, (0, 0, w, h), *sky)
        if hills:
            v = ImageDraw.Draw(view)
            v.ellipse((-w * 0.2, h * 0.62, w * 0.7, h * 1.5), fill=(96, 140, 88))
            v.ellipse((w * 0.4, h * 0.7, w * 1.3, h * 1.6), fill=(78, 122, 74))
        self.img.paste(view, (x0, y0))
        d = self.d
        frame = (245, 245, 240)
        d.rectangle((x0, y0, x1, y1), outline=frame, width=14)
        d.line([((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1)], fill=frame, width=10)
        d.line([(x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)], fill=frame, width=8)

    def light(self, box, color=(255, 246, 220), alpha=70, blur=60):
        """A soft patch of daylight."""
        over = Image.new('RGB', (W, H), color)
        mask = Image.new('L', (W, H), 0)
        ImageDraw.Draw(mask).polygon(box, fill=alpha)
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
        self.img = Image.composite(over, self.img, mask)
        self.d = ImageDraw.Draw(self.img)

    def box(self, x0, y0, x1, y1, depth, color, top=None):
        """A piece of furniture: a front face and its top going back in depth."""
        d = self.d
        a, b = self.toward((x0, y0), depth), self.toward((x1, y0), depth)
        d.polygon([(x0, y0), (x1, y0), b, a], fill=top or shade(color, 1.15))
        if x0 > self.vp[0]:
            d.polygon([(x0, y0), a, self.toward((x0, y1), depth), (x0, y1)], fill=shade(color, 0.8))
        elif x1 < self.vp[0]:
            d.polygon([(x1, y0), b, self.toward((x1, y1), depth), (x1, y1)], fill=shade(color, 0.8))
        d.rectangle((x0, y0, x1, y1), fill=color)

    def picture(self, x0, y0, x1, y1, colors):
        d = self.d
        d.rectangle((x0 - 10, y0 - 10, x1 + 10, y1 + 10), fill=(60, 50, 40))
        n = len(colors)
        for i, c in enumerate(colors):
            d.rectangle((x0 + (x1 - x0) * i / n, y0, x0 + (x1 - x0) * (i + 1) / n, y1), fill=c)

    def plant(self, x, y, s):
        d = self.d
        d.polygon([(x - s * 0.35, y), (x + s * 0.35, y), (x + s * 0.25, y + s * 0.6), (x - s * 0.25, y + s * 0.6)], fill=(170, 110, 70))
        for i in range(9):
            a = self.rng.uniform(-1.2, 1.2)
            d.ellipse((x + a * s * 0.5 - s * 0.3, y - s * (0.4 + 0.5 * abs(a)) - s * 0.3, x + a * s * 0.5 + s * 0.3, y - s * (0.4 + 0.5 * abs(a)) + s * 0.3),
                      fill=mix((52, 110, 60), (90, 150, 80), self.rng.random()))

    def lamp(self, x, y, h):
        d = self.d
        d.line([(x, y), (x, y - h)], fill=(50, 50, 50), width=6)
        d.polygon([(x - h * 0.25, y - h), (x + h * 0.25, y - h), (x + h * 0.16, y - h * 1.35), (x - h * 0.16, y - h * 1.35)], fill=(250, 236, 200))

    def finish(self):
        # A little grain, as a camera would give.
        noise = Image.frombytes('L', (W, H), self.rng.randbytes(W * H)).convert('RGB')
        return Image.blend(self.img, noise, 0.03).filter(ImageFilter.GaussianBlur(0.6))


def living_room(r):
    r.shell(wall=(226, 218, 200), floor=(164, 118, 78), ceiling=(242, 240, 234), planks=True)
    r.window(r.bx0 + 420, r.by0 + 40, r.bx0 + 740, r.by0 + 290)
    r.light([(560, H), (1100, H), (r.bx0 + 700, r.by1), (r.bx0 + 420, r.by1)])
    r.picture(r.bx0 + 80, r.by0 + 70, r.bx0 + 330, r.by0 + 210, [(200, 90, 60), (230, 190, 90), (70, 110, 150)])
    r.d.ellipse((520, 860, 1400, 1040), fill=(190, 60, 60))  # rug
    r.box(560, 700, 1360, 860, 0.22, (72, 88, 120))  # sofa
    r.box(560, 620, 1360, 700, 0.08, (62, 78, 110))  # its back
    r.box(500, 660, 580, 860, 0.2, (62, 78, 110))
    r.box(1340, 660, 1420, 860, 0.2, (62, 78, 110))
    r.box(780, 900, 1140, 950, 0.08, (120, 80, 50))  # coffee table
    r.lamp(1560, 900, 330)
    r.plant(330, 780, 170)


def kitchen(r):
    r.shell(wall=(236, 236, 232), floor=(200, 200, 196), ceiling=(248, 248, 246), tiles=(160, 160, 156))
    b = r
    r.d.rectangle((b.bx0, b.by0 + 30, b.bx1, b.by0 + 150), fill=(120, 150, 140))  # upper cabinets
    for i in range(6):
        x = b.bx0 + (b.bx1 - b.bx0) * i / 6
        r.d.line([(x, b.by0 + 30), (x, b.by0 + 150)], fill=(90, 120, 110), width=3)
    r.window(b.bx0 + 280, b.by0 + 165, b.bx0 + 490, b.by0 + 300, hills=False)
    r.d.rectangle((b.bx0, b.by1 - 120, b.bx1, b.by1 - 10), fill=(120, 150, 140))  # lower cabinets
    r.d.rectangle((b.bx0, b.by1 - 135, b.bx1, b.by1 - 118), fill=(60, 60, 64))  # worktop
    r.box(520, 760, 1400, 960, 0.16, (110, 140, 130), top=(235, 235, 228))  # island
    for x in (760, 960, 1160):
        r.d.line([(x, 0), (x, 330)], fill=(40, 40, 40), width=4)
        r.d.pieslice((x - 70, 300, x + 70, 420), 180, 360, fill=(30, 30, 34))
        r.d.ellipse((x - 24, 348, x + 24, 372), fill=(255, 240, 190))
    for x in (640, 860, 1080, 1300):
        r.d.rectangle((x, 860, x + 12, 1040), fill=(40, 40, 40))
        r.d.ellipse((x - 40, 830, x + 52, 870), fill=(180, 120, 70))
    r.plant(1500, 610, 80)


def bedroom(r):
    r.shell(wall=(206, 216, 230), floor=(176, 140, 104), ceiling=(244, 244, 246), planks=True)
    r.window(r.bx1 - 300, r.by0 + 40, r.bx1 - 60, r.by0 + 280)
    r.light([(1100, H), (1700, H), (r.bx1 - 60, r.by1), (r.bx1 - 300, r.by1)], alpha=80)
    r.box(740, 520, 1180, 700, 0.05, (120, 90, 70))  # headboard
    r.box(700, 700, 1220, 900, 0.34, (245, 245, 240), top=(250, 250, 248))  # bed
    r.d.polygon([(700, 800), (1220, 800), (1250, 920), (670, 920)], fill=(150, 170, 200))  # throw
    r.d.ellipse((790, 640, 930, 700), fill=(255, 255, 255))
    r.d.ellipse((990, 640, 1130, 700), fill=(255, 255, 255))
    r.box(560, 720, 660, 820, 0.1, (120, 90, 70))
    r.box(1260, 720, 1360, 820, 0.1, (120, 90, 70))
    r.lamp(610, 720, 120)
    r.lamp(1310, 720, 120)
    r.picture(r.bx0 + 40, r.by0 + 60, r.bx0 + 200, r.by0 + 180, [(170, 190, 210), (220, 200, 170)])


def bathroom(r):
    r.shell(wall=(226, 236, 238), floor=(150, 156, 164), ceiling=(250, 250, 250), tiles=(120, 126, 134))
    b = r
    for i in range(1, 12):
        y = b.by0 + (b.by1 - b.by0) * i / 12
        r.d.line([(b.bx0, y), (b.bx1, y)], fill=(200, 212, 216), width=2)
    r.d.rectangle((b.bx0 + 60, b.by0 + 40, b.bx0 + 300, b.by0 + 200), fill=(200, 220, 230), outline=(180, 180, 180), width=8)  # mirror
    r.box(b.bx0 + 40, b.by1 - 150, b.bx0 + 320, b.by1 - 20, 0.05, (250, 250, 250))  # vanity
    r.box(280, 780, 1100, 940, 0.25, (248, 248, 250))  # bath
    r.d.ellipse((340, 790, 1040, 850), fill=(190, 215, 230))
    r.d.rectangle((1250, 300, 1600, 1000), fill=(200, 225, 235), outline=(170, 170, 170), width=6)  # shower glass
    r.window(b.bx1 - 220, b.by0 + 30, b.bx1 - 60, b.by0 + 160, hills=False)
    r.plant(1700, 880, 120)


def dining_room(r):
    r.shell(wall=(232, 214, 196), floor=(140, 96, 62), ceiling=(244, 240, 236), planks=True)
    r.window(r.bx0 + 60, r.by0 + 40, r.bx0 + 300, r.by0 + 290)
    r.window(r.bx1 - 300, r.by0 + 40, r.bx1 - 60, r.by0 + 290)
    r.box(560, 760, 1360, 800, 0.3, (110, 70, 44))  # table top
    for x in (600, 1300):
        r.d.rectangle((x, 800, x + 24, 980), fill=(90, 56, 34))
    for x in (620, 840, 1060, 1260):
        r.box(x, 640, x + 80, 900, 0.05, (60, 60, 66))
    r.d.line([(960, 0), (960, 300)], fill=(60, 50, 40), width=4)
    r.d.ellipse((860, 290, 1060, 370), fill=(230, 200, 120))


def office(r):
    r.shell(wall=(214, 222, 210), floor=(120, 120, 128), ceiling=(244, 244, 240))
    r.window(r.bx0 + 200, r.by0 + 40, r.bx1 - 200, r.by0 + 260)
    r.box(600, 720, 1320, 760, 0.25, (170, 130, 90))  # desk
    r.d.rectangle((640, 760, 670, 960), fill=(120, 90, 60))
    r.d.rectangle((1250, 760, 1280, 960), fill=(120, 90, 60))
    r.d.rectangle((880, 600, 1060, 700), fill=(30, 30, 34))  # screen
    for i in range(5):  # bookshelf
        y = 260 + i * 150
        r.d.rectangle((100, y, 380, y + 14), fill=(90, 60, 40))
        x = 110
        while x < 370:
            w = r.rng.randint(14, 34)
            r.d.rectangle((x, y - r.rng.randint(80, 130), x + w, y), fill=mix((150, 40, 40), (40, 80, 150), r.rng.random()))
            x += w + 3
    r.plant(1620, 860, 150)


def exterior(r):
    d = r.d
    gradient(r.img, (0, 0, W, 640), (110, 165, 225), (200, 225, 245))
    d.rectangle((0, 620, W, H), fill=(98, 150, 78))
    d.polygon([(880, H), (1040, H), (990, 760), (930, 760)], fill=(196, 186, 170))  # path
    d.rectangle((440, 380, 1480, 770), fill=(236, 228, 212))  # house
    d.polygon([(380, 390), (1540, 390), (960, 140)], fill=(120, 70, 60))  # roof
    d.rectangle((900, 560, 1020, 770), fill=(110, 70, 50))  # door
    for x in (540, 1200):
        r.window(x, 460, x + 200, 640, hills=False)
    r.window(880, 400, 1040, 500, hills=False)
    for x, s in ((190, 260), (1730, 300), (1560, 170)):
        d.rectangle((x - 16, 520, x + 16, 760), fill=(100, 70, 50))
        d.ellipse((x - s * 0.6, 520 - s, x + s * 0.6, 560), fill=(60, 120, 60))
    for x in range(460, 900, 70):
        d.ellipse((x, 730, x + 90, 800), fill=(70, 130, 70))


def backyard(r):
    d = r.d
    gradient(r.img, (0, 0, W, 560), (100, 160, 225), (190, 220, 245))
    d.rectangle((0, 540, W, H), fill=(108, 168, 84))
    for x in range(0, W, 60):  # fence
        d.rectangle((x, 430, x + 44, 560), fill=(190, 160, 120))
    d.rectangle((0, 470, W, 484), fill=(170, 140, 100))
    for x, s in ((300, 260), (1500, 320), (980, 200)):
        d.rectangle((x - 18, 300, x + 18, 500), fill=(100, 70, 50))
        d.ellipse((x - s * 0.7, 300 - s, x + s * 0.7, 360), fill=(60, 118, 62))
    d.polygon([(300, H), (1620, H), (1360, 760), (560, 760)], fill=(186, 170, 150))  # patio
    r.box(700, 830, 1220, 870, 0.12, (240, 240, 236))  # table
    r.d.rectangle((940, 870, 980, 1000), fill=(200, 200, 196))
    r.d.polygon([(960, 560), (640, 700), (1280, 700)], fill=(230, 90, 70))  # parasol
    r.d.rectangle((954, 700, 966, 830), fill=(80, 80, 80))
    for x in (600, 1260):
        r.box(x, 820, x + 90, 940, 0.05, (90, 90, 96))


ROOMS = {
    'exterior': exterior, 'living_room': living_room, 'kitchen': kitchen, 'bedroom': bedroom,
    'primary_bedroom': bedroom, 'bathroom': bathroom, 'dining_room': dining_room, 'office': office,
    'backyard': backyard,
}


def draw(room, seed):
    r = Room(random.Random(seed))
    ROOMS[room](r)
    return r.finish()


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for i, arg in enumerate(sys.argv[2:]):
        room, _, name = arg.partition(':')
        if room not in ROOMS:
            sys.exit('unknown room %r (known: %s)' % (room, ', '.join(sorted(ROOMS))))
        img = draw(room, i)
        img.save(os.path.join(out, (name or room) + '.jpg'), quality=90)


if __name__ == '__main__':
    main()
