// What the simulators' fake model does with a photo: the camera move read from
// the prompt's words, and the ffmpeg CLI arguments of the clip (the move over
// the photo, a move from one photo into another when an end image differs, a
// quiet room tone when audio is on).  Node's standard library only.
'use strict';

// Camera moves, by the words a motion prompt uses for them.  The first one
// named in the prompt wins ("pan across the yard revealing the lawn" pans);
// a prompt naming none gets a slow push-in, Kling's usual answer.
const MOVES = [
	['pull_back', /\b(pull(s|ing|ed)?[ -]?(back|out|away)|push(es|ing)?[ -]out|dolly(ing)?[ -](out|back(ward)?)|zoom(s|ing)?[ -]out|backwards?|retreat(s|ing)?|widen(s|ing)?)\b/],
	['push_in', /\b(push(es|ing)?([ -]?in)?|dolly(ing)?[ -](in|forward)|zoom(s|ing)?[ -]in|forward|walk[ -]?through|approach(es|ing)?|toward(s)?|move(s)? (in|closer)|closer)\b/],
	['orbit', /\b(orbit(s|ing)?|arc(s|ing)?|circl(e|es|ing)|around)\b/],
	['tilt', /\b(tilt(s|ing)?|crane(s|ing)?|pedestal|upward|downward|rise|rising|descend(s|ing)?)\b/],
	['pan', /\b(pan(s|ning|ned)?|lateral(ly)?|truck(s|ing)?|slid(e|es|ing)|glid(e|es|ing)|sweep(s|ing)?|track(s|ing)?|along|across)\b/],
	['static', /\b(static|still|locked[ -]off|tripod|no camera (motion|movement))\b/],
];

const SPEEDS = [
	[0.6, /\b(very slow(ly)?|barely|imperceptible|subtle)\b/],
	[1.6, /\b(fast|quick(ly)?|rapid(ly)?|swift(ly)?|dynamic|energetic)\b/],
	[0.8, /\b(slow(ly)?|gentle|gently|soft(ly)?|calm(ly)?|graceful(ly)?|smooth(ly)?|steady)\b/],
];

// The camera move a prompt asks for: {move, direction, speed}.
//   move: push_in | pull_back | pan | tilt | orbit | static
//   direction: 1 (right, down) or -1 (left, up), for pan, tilt and orbit
//   speed: a factor of the move's size (slow 0.8, fast 1.6, ...)
function motionOf(prompt) {
	const text = String(prompt || '').toLowerCase();
	let best = null;
	for (const [move, re] of MOVES) {
		const m = re.exec(text);
		if (m && (!best || m.index < best.index)) best = { move, index: m.index };
	}
	const move = best ? best.move : 'push_in';
	let direction = 1;
	if (move === 'tilt') direction = /\b(down(ward)?|descend)/.test(text) && !/\bup(ward)?\b/.test(text) ? 1 : -1;
	else if (/\bleft(ward)?s?\b/.test(text)) direction = -1;
	let speed = 1;
	for (const [s, re] of SPEEDS) if (re.test(text)) { speed = s; break; }
	return { move, direction, speed };
}

// A short stable name of a motion, for cache keys and logs.
const motionKey = (m) => `${m.move}${m.direction < 0 ? '-' : '+'}${m.speed}`;

// zoompan expressions {z, x, y} of a move over n frames.  `e` eases the
// progress on/(n-1) in and out, as a gimbal operator would.
function zoompanExpr(m, n) {
	const e = `(0.5-0.5*cos(PI*min(on/${Math.max(1, n - 1)},1)))`;
	const a = (0.16 * m.speed).toFixed(3);
	const cx = 'iw/2-(iw/zoom/2)', cy = 'ih/2-(ih/zoom/2)';
	const across = (dir, axis) => `(${axis}-${axis}/zoom)*${dir < 0 ? `(1-${e})` : e}`;
	switch (m.move) {
	case 'pull_back': return { z: `1+${a}*(1-${e})`, x: cx, y: cy };
	case 'pan': return { z: `1+${a}`, x: across(m.direction, 'iw'), y: cy };
	case 'tilt': return { z: `1+${a}`, x: cx, y: across(m.direction, 'ih') };
	case 'orbit': return { z: `1+${(0.1 * m.speed).toFixed(3)}+${(0.06 * m.speed).toFixed(3)}*${e}`, x: across(m.direction, 'iw'), y: cy };
	case 'static': return { z: `1+0.015*${e}`, x: cx, y: cy };
	default: return { z: `1+${a}*${e}`, x: cx, y: cy };
	}
}

// The filter that turns a single photo into n frames of a move at w x h.
// The photo is first cropped to the output's shape at twice its size, so
// zoompan's whole-pixel crop steps are half a pixel of the output.
function moveFilter(input, m, n, w, h, label) {
	const { z, x, y } = zoompanExpr(m, n);
	return `[${input}:v]scale=${w * 2}:${h * 2}:force_original_aspect_ratio=increase,crop=${w * 2}:${h * 2},setsar=1,`
		+ `zoompan=z='${z}':x='${x}':y='${y}':d=${n}:s=${w}x${h}:fps=24,format=yuv420p[${label}]`;
}

// How the encoder runs: "fast" (ultrafast, the tests' small clips) or
// "kling" (High profile with B-frames, CRF 20, BT.709 tags and a film grain,
// for files the size and shape of Kling's: about 12 MB for 5 s at 1080p).
function qualityOf(spec) {
	if (spec.quality === 'fast' || spec.quality === 'kling') return spec.quality;
	return Math.min(spec.width, spec.height) >= 720 ? 'kling' : 'fast';
}

// The ambience of a clip with audio on: a quiet room tone (brown noise under
// 300 Hz), or outdoors (the prompt names a garden, birds, a breeze) a soft
// band of pink noise that swells like wind.  About -45 dBFS RMS.
function ambienceFilter(prompt, d, seed) {
	const outdoor = /\b(outside|outdoors?|garden|yard|backyard|lawn|birds?(ong)?|breeze|wind|exterior|facade|pool|patio|terrace|balcony|view)\b/i.test(String(prompt || ''));
	const src = `anoisesrc=d=${d}:c=${outdoor ? 'pink' : 'brown'}:r=48000:a=${outdoor ? 0.1 : 0.05}:s=${seed}`;
	const shape = outdoor ? "highpass=f=200,lowpass=f=2500,volume='0.6+0.4*sin(2*PI*t/3.7)':eval=frame"
		: 'highpass=f=40,lowpass=f=300';
	return { outdoor, filter: `${src},${shape},aformat=sample_fmts=fltp:sample_rates=48000:channel_layouts=stereo` };
}

// The ffmpeg arguments of a fake clip: spec {duration, width, height, audio,
// motion, prompt, quality}; imageFile null gives a test pattern; an endFile
// makes the clip move from the first photo into the second: a push into the
// first, a dissolve, and the second settling, ending on it exactly.
function videoArgs(imageFile, endFile, spec, out) {
	const { duration: d, width: w, height: h, audio } = spec;
	const n = d * 24;
	const m = spec.motion || motionOf(spec.prompt);
	const args = ['-nostdin', '-v', 'error', '-y'];
	let filter;
	if (imageFile && endFile) {
		const len = Math.ceil(n * 0.7), off = n - len;
		args.push('-i', imageFile, '-i', endFile);
		const into = { move: 'push_in', direction: 1, speed: 1.6 * m.speed };
		const out2 = { move: 'pull_back', direction: 1, speed: 1.6 * m.speed };
		filter = `${moveFilter(0, into, len, w, h, 'a')};${moveFilter(1, out2, len, w, h, 'b')};`
			+ `[a][b]xfade=transition=fade:duration=${((len - off) / 24).toFixed(4)}:offset=${(off / 24).toFixed(4)},`
			+ `trim=end_frame=${n},setpts=PTS-STARTPTS[v]`;
	} else if (imageFile) {
		args.push('-i', imageFile);
		filter = moveFilter(0, m, n, w, h, 'v');
	} else {
		args.push('-f', 'lavfi', '-i', `testsrc2=s=${w}x${h}:r=24:d=${d}`);
		filter = '[0:v]format=yuv420p[v]';
	}
	const quality = qualityOf(spec);
	if (quality === 'kling' && imageFile) filter = filter.replace(/\[v\]$/, '[g];[g]noise=c0s=3:allf=t[v]');
	if (audio) {
		const amb = ambienceFilter(spec.prompt, d, 1 + (spec.seed || 0));
		filter += `;${amb.filter}[aud]`;
	}
	args.push('-filter_complex', filter, '-map', '[v]');
	if (audio) args.push('-map', '[aud]');
	args.push('-r', '24', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-threads', '1');
	if (quality === 'kling') {
		args.push('-preset', 'superfast', '-profile:v', 'high', '-crf', '20',
			'-colorspace', 'bt709', '-color_primaries', 'bt709', '-color_trc', 'bt709');
	} else args.push('-preset', 'ultrafast', '-g', '48');
	if (audio) args.push('-c:a', 'aac', '-b:a', '128k', '-ar', '48000', '-ac', '2');
	args.push('-map_metadata', '-1', '-fflags', '+bitexact', '-flags:v', '+bitexact', '-flags:a', '+bitexact',
		'-movflags', '+faststart', '-f', 'mp4', out);
	return args;
}

module.exports = { motionOf, motionKey, zoompanExpr, videoArgs, qualityOf, ambienceFilter };
